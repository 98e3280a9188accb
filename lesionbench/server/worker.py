"""``lesionbench worker``: claim queued submissions and score them with the harness's own scoring code.

Scoring is :mod:`lesionbench.leaderboard.submissions.submit`'s, unchanged: the file is validated by
:mod:`lesionbench.leaderboard.submissions.submission_file` (every problem at once), an embeddings file is turned into
predictions by the standard linear probe (``_probe_features``), and ``score_predictions`` scores the
public and the private part of the test set with bootstrap CIs. The worker stores the metrics in the
database and the labelled per-lesion table in the blob store (organiser-only), then completes the job
only if it still holds the lease (see :mod:`lesionbench.server.jobs`).

A sanity phase scores a few cases: the file is checked against the whole test set as in every phase (so a
team learns every problem of its file), but only the test lesions of :data:`SANITY_PATIENTS` patients (a
seeded, label-stratified choice fixed per task version, :func:`sanity_cases`) are scored, so the phase
shows the scoring log and a plausible number while telling little about the other test labels.

Failure classes: a :class:`~lesionbench.benchmark.errors.SubmissionError` is the file's fault (failed,
counts against the quota, the problems are shown to the team); anything else is the server's (the job
is retried; after its last attempt it is an infrastructure failure that never counts).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesionbench.benchmark.errors import SubmissionError
from lesionbench.server import jobs
from lesionbench.server.blobs import BlobStore
from lesionbench.server.db import Challenge, Database, Phase, Submission, utcnow

logger = logging.getLogger(__name__)

TaskLoader = Callable[[str], Any]


def default_task_loader(name: str) -> Any:
    """The registered task ``name`` with its default data folder ($LESIONBENCH_DATA/<task>)."""
    from lesionbench.benchmark.encoders.plugins import get_task

    return get_task(name)


@dataclass
class _TaskCache:
    loader: TaskLoader
    tasks: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def get(self, name: str) -> tuple[Any, Any]:
        if name not in self.tasks:
            task = self.loader(name)
            self.tasks[name] = (task, task.manifest())
        return self.tasks[name]


class _Capture(logging.Handler):
    """The log lines of one scoring run (shown to the team in a sanity phase only)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 200:
            self.lines.append(self.format(record))


#: Test patients a sanity phase scores (at least two per class or outcome stratum where the test set has them).
SANITY_PATIENTS = 10


def sanity_cases(meta: Any, manifest: Any, n_patients: int = SANITY_PATIENTS) -> frozenset[str]:
    """The test lesions a sanity phase scores: every test lesion of ``n_patients`` (or ``2 x`` the classes,
    whichever is more) test patients, drawn round-robin over the strata (class; survival: 2-year outcome)
    in an order seeded by the task name and version, so the set is the same for every team and run."""
    import hashlib

    import numpy as np

    from lesionbench.leaderboard.submissions.submit import outcome_strata

    test = manifest[manifest["split"] == "test"].sort_values("lesion_id", kind="stable")  # the choice ignores row order
    first = test.groupby("patient_id", sort=True).first()  # a patient's stratum: its first lesion's
    strata = outcome_strata(meta, first)
    seed = int.from_bytes(hashlib.sha256(f"sanity:{meta.name}:{meta.version}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(first.index[strata == k].astype(str).to_numpy())) for k in np.unique(strata)]
    want = max(int(n_patients), 2 * len(queues))
    chosen: list[str] = []
    while len(chosen) < want and any(queues):
        for q in queues:
            if q and len(chosen) < want:
                chosen.append(q.pop())
    return frozenset(test.loc[test["patient_id"].astype(str).isin(chosen), "lesion_id"].astype(str))


def score_bytes(task: Any, manifest: Any, data: bytes, kind: str, n_boot: int, cases: frozenset[str] | None = None) -> Any:
    """:func:`score_file` on the uploaded bytes, in a scratch folder of its own (runs on a Dask worker too)."""
    with tempfile.TemporaryDirectory(prefix="lesionbench-job-") as tmp:
        path = Path(tmp) / ("predictions.csv" if kind == "predictions" else "embeddings.csv")
        path.write_bytes(data)
        return score_file(task, manifest, path, kind=kind, n_boot=n_boot, cases=cases)


def local_executor(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` here (the default); a Dask client's ``lambda fn, *a: client.submit(fn, *a, pure=False).result()`` runs it there."""
    return fn(*args)


def dask_executor(client: Any) -> Callable[..., Any]:
    """An executor that scores on ``client``'s Dask workers (the Slurm path of docs/scale-out.md)."""

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return client.submit(fn, *args, pure=False).result()

    return run


def score_file(task: Any, manifest: Any, path: Path, *, kind: str, n_boot: int, cases: frozenset[str] | None = None) -> Any:
    """Validate and score one file with the leaderboard's submission code; returns its ``SubmissionScore``.
    ``cases``: score only these test lesions (a sanity phase); the file is checked against every test lesion."""
    from lesionbench.leaderboard.submissions.submit import MAX_FEATURES_BYTES, MAX_SUBMISSION_BYTES, _probe_features, _validate_features, _validate_predictions, score_predictions

    if kind == "predictions":
        preds, _ = _validate_predictions(path, task.meta, manifest, max_bytes=MAX_SUBMISSION_BYTES, problems=[])
    else:
        features, _ = _validate_features(path, manifest, max_bytes=MAX_FEATURES_BYTES, problems=[])
        preds = _probe_features(task, manifest, features)
    if cases is not None:
        preds = preds[preds["lesion_id"].astype(str).isin(cases)].reset_index(drop=True)
        manifest = manifest[(manifest["split"] != "test") | manifest["lesion_id"].astype(str).isin(cases)].reset_index(drop=True)
        logger.info("Sanity phase: the file covers every test lesion; scored on %d of them (%d patients) only.", len(preds), manifest.loc[manifest["split"] == "test", "patient_id"].nunique())
    return score_predictions(task.meta, manifest, preds, n_boot=n_boot, seed=0)


def _metrics_json(d: dict[str, Any]) -> str:
    from lesionbench.leaderboard.submissions.organiser import metric_dict

    return json.dumps(metric_dict(d), allow_nan=True)


def process(db: Database, blobs: BlobStore, claim: jobs.Claim, tasks: _TaskCache, *, lease_s: float, executor: Callable[..., Any] = local_executor) -> str:
    """Score the claimed submission; returns the outcome: scored, rejected, retry or lost."""
    with db.session() as s:
        sub = s.get(Submission, claim.submission_id)
        phase = s.get(Phase, sub.phase_id)
        challenge = s.get(Challenge, phase.challenge_id)
        kind, digest, task_name, n_boot, sanity = sub.kind, sub.file_sha256, phase.task, challenge.n_boot, phase.kind == "sanity"
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(max(0.5, lease_s / 3)):
            if not jobs.renew(db, claim, lease_s=lease_s):
                logger.warning("Job %d: lease lost while scoring; the result will be discarded.", claim.job_id)
                return

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    capture = _Capture()
    root = logging.getLogger("lesionbench")
    root.addHandler(capture)
    failure: tuple[str, str] | None = None
    score = None
    try:
        task, manifest = tasks.get(task_name)
        try:
            cases = sanity_cases(task.meta, manifest) if sanity else None
            score = executor(score_bytes, task, manifest, blobs.read_bytes(digest), kind, n_boot, cases)
            if cases is not None:  # said in the team's log whatever the log level (scoring may run on a Dask worker)
                n_test = int((manifest["split"] == "test").sum())
                capture.lines.append(f"INFO sanity phase: the file was checked against all {n_test} test lesions; scored on {len(cases)} of them "
                                     f"only (a fixed choice of {SANITY_PATIENTS} patients); the public and final phases score every test lesion.")  # fmt: skip
        except SubmissionError as exc:
            failure = ("submission", "\n".join(exc.problems))
    except Exception:
        logger.exception("Job %d (submission %d): infrastructure error on attempt %d", claim.job_id, claim.submission_id, claim.attempt)
        stop.set()
        jobs.release_for_retry(db, claim)
        return "retry"
    finally:
        stop.set()
        root.removeHandler(capture)
    pred_digest = None
    if score is not None:
        buf = io.StringIO()
        score.predictions.to_csv(buf, index=False)
        pred_digest = blobs.put_bytes(buf.getvalue().encode())
    with db.session(lock=True) as s:
        job = jobs.holds(s, claim)
        if job is None:
            logger.warning("Job %d: lease lost before the result was recorded; another worker owns it now.", claim.job_id)
            return "lost"
        sub = s.get(Submission, claim.submission_id)
        now = utcnow()
        job.state, job.lease_owner, job.updated_at = "done", None, now
        sub.finished_at, sub.log = now, "\n".join(capture.lines)
        if failure is not None:
            sub.status, sub.failure_class, sub.message, sub.counted = "failed", failure[0], failure[1], True
            return "rejected"
        from lesionbench.leaderboard import _stats

        main = _stats.main_metric(task.meta)
        sub.status, sub.failure_class, sub.message = "scored", None, ""
        sub.public_json, sub.private_json = _metrics_json(score.public), _metrics_json(score.private)
        value = score.public[main].value
        sub.main_public = float(value) if math.isfinite(value) else None
        sub.n_public, sub.n_private, sub.predictions_sha256 = score.n_public, score.n_private, pred_digest
    return "scored"


def run_worker(
    db: Database, blobs: BlobStore, *, task_loader: TaskLoader = default_task_loader, owner: str | None = None,
    lease_s: float = jobs.DEFAULT_LEASE_S, poll_s: float = 1.0, max_jobs: int | None = None, idle_exit_s: float | None = None,
    stop: threading.Event | None = None, executor: Callable[..., Any] = local_executor,
) -> int:
    """Claim and score jobs until ``max_jobs`` are done, the queue stayed empty ``idle_exit_s`` seconds
    (None: forever) or ``stop`` is set; returns how many jobs were processed."""
    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    tasks = _TaskCache(task_loader)
    done, idle_since = 0, time.monotonic()
    stop = stop or threading.Event()
    while (max_jobs is None or done < max_jobs) and not stop.is_set():
        c = jobs.claim(db, owner, lease_s=lease_s)
        if c is None:
            if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            stop.wait(poll_s)
            continue
        outcome = process(db, blobs, c, tasks, lease_s=lease_s, executor=executor)
        logger.info("Job %d (submission %d, attempt %d): %s.", c.job_id, c.submission_id, c.attempt, outcome)
        done += 1
        idle_since = time.monotonic()
    return done
