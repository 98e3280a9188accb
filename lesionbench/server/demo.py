"""``lesionbench serve --demo``: a ready challenge on the synthetic tasks, in an organiser folder.

Creates (once; a second start reuses them) the SQLite database, an organiser account whose password is
written to ``organiser-password.txt`` (mode 0600) in the folder, the challenge ``lesionbench-demo`` with
an open sanity phase and one open public phase per synthetic task, and example predictions files
(random scores for every test lesion: no labels) under ``examples/`` to upload.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from lesionbench.server import service
from lesionbench.server.auth import hash_password
from lesionbench.server.db import Challenge, User

logger = logging.getLogger(__name__)

DEMO_SLUG = "lesionbench-demo"
ORGANISER_EMAIL = "organiser@example.org"
#: (phase name, kind, task) of the demo challenge.
DEMO_PHASES = (
    ("sanity", "sanity", "synthetic_malignancy"),
    ("malignancy", "public", "synthetic_malignancy"),
    ("site", "public", "synthetic_site"),
    ("survival", "public", "synthetic_survival"),
)


def example_predictions(task: Any, out: Path, *, seed: int = 0) -> Path:
    """A valid predictions CSV with random scores for every test lesion of ``task`` (for trying the server)."""
    import pandas as pd

    from lesionbench.benchmark.types import TaskKind

    test = task.manifest()
    test = test[test["split"] == "test"]
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"lesion_id": test["lesion_id"].astype(str).to_numpy()})
    meta = task.meta
    if meta.kind is TaskKind.MULTICLASS:
        p = rng.dirichlet(np.ones(meta.n_classes), size=len(df))
        for i, name in enumerate(meta.class_names):
            df[f"score_{name}"] = p[:, i]
    elif meta.kind is TaskKind.BINARY:
        df["score"] = rng.random(len(df))
    else:
        df["risk"] = rng.normal(size=len(df))
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out


def setup_demo(cfg: Any, folder: Path, *, task_loader: Any, phases: tuple[tuple[str, str, str], ...] = DEMO_PHASES, n_boot: int = 200) -> dict[str, Any]:
    """Create the demo organiser, challenge, phases and example files (idempotent); returns what to tell the user."""
    folder = Path(folder)
    pw_file = folder / "organiser-password.txt"
    with cfg.db.session(lock=True) as s:
        organiser = s.scalar(select(User).where(User.email == ORGANISER_EMAIL))
        if organiser is None:
            password = secrets.token_urlsafe(12)
            organiser = User(email=ORGANISER_EMAIL, display_name="Organiser", password_hash=hash_password(password), is_organiser=True)
            s.add(organiser)
            s.flush()
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
        if s.scalar(select(Challenge).where(Challenge.slug == DEMO_SLUG)) is None:
            ch = service.create_challenge(s, organiser, slug=DEMO_SLUG, title="lesionbench demo challenge (synthetic CT)", description="Submit predictions (or embeddings) for the synthetic tasks; the board shows 95% CIs, rank intervals and who is tied with the top.", n_boot=n_boot)
            for name, kind, task in phases:
                p = service.create_phase(s, organiser, ch, name=name, kind=kind, task=task, task_version=task_loader(task).meta.version, quota_per_window=20, max_concurrent=3)
                service.set_phase_state(s, organiser, p, "open")
    examples = {}
    for task in sorted({t for _, _, t in phases}):
        path = folder / "examples" / f"{task}-predictions.csv"
        if not path.exists():
            example_predictions(task_loader(task), path)
        examples[task] = path
    return {"organiser_email": ORGANISER_EMAIL, "password_file": pw_file, "examples": examples, "slug": DEMO_SLUG}


def synthetic_task_loader(name: str) -> Any:
    """Synthetic tasks from the default cohort, generated first when absent (a few minutes, once)."""
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.tasks.synthetic import ensure_cohort

    if name.startswith("synthetic_"):
        ensure_cohort()
    return get_task(name)
