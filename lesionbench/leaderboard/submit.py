"""Kaggle-style submissions: validate an untrusted predictions (or features) file, score it, log it.

The harness holds the labels (the task's manifest); a submission is only ``lesion_id -> scores``.

Rules a predictions file must follow (all problems are reported at once, in one
:class:`~lesionbench.benchmark.errors.SubmissionError`, before anything is written):

- at most :data:`MAX_SUBMISSION_BYTES` (checked before the file is read), UTF-8 CSV with a header;
- a ``lesion_id`` column and the task's score columns: multiclass ``score_<class name>`` (or
  ``score_0 .. score_<k-1>``), binary ``score`` (probability of the positive class), survival ``risk``
  (higher = worse prognosis; ranks the C-index) and optionally ``score`` (probability of death within
  2 years; ranks the 2-year AUC, for which the risk stands in when it is absent); other columns are ignored;
- every test lesion of the task exactly once: no missing, duplicate, unknown or non-test ids;
- scores numeric and finite; probabilities in [0, 1]; multiclass rows sum to 1 within
  :data:`ROW_SUM_TOLERANCE` and are then renormalised to exactly 1 (so rounding in a written CSV
  is harmless, while logits or one-hot rows of the wrong task are refused, not silently rescaled);
- the submission name: 1 to :data:`MAX_NAME_LENGTH` characters out of letters, digits, space and
  ``._+()-``, starting with a letter or digit, no ``..`` (it names a folder and an MLflow run).

A later submission under the same name replaces the earlier one on the leaderboard (MLflow keeps
every submission as its own run).

A valid file is scored on a **public** and a **private** part of the test set: a 50/50 division
grouped by patient and stratified by label (survival: by the 2-year label, censored-early as its
own stratum), drawn by scikit-learn's ``StratifiedGroupKFold`` with a seed derived from the task
name and version, so it is fixed per task version. The leaderboard shows the public score; the
private one only when the organiser builds with ``--reveal``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench import __version__
from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError, SubmissionError
from lesionbench.benchmark.host import sha256_file
from lesionbench.benchmark.types import EncoderMeta, MetricValue, SubsetResult, TaskKind, TaskMeta, TaskResult
from lesionbench.leaderboard import _stats
from lesionbench.benchmark.tracking import absolute_sqlite_uri, artifact_location

logger = logging.getLogger(__name__)

#: Largest accepted submission file; checked with ``stat`` before reading a byte.
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
#: Largest accepted features file (features for every lesion are bigger than predictions).
MAX_FEATURES_BYTES = 512 * 1024 * 1024
MAX_NAME_LENGTH = 64
#: Multiclass probability rows may deviate this much from 1 before they are refused.
ROW_SUM_TOLERANCE = 0.01
#: How many offending rows or ids one problem lists before summarising.
MAX_LISTED = 10

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+()-]*")


# ------------------------------------------------------------------------------------ names
def name_problems(name: str) -> list[str]:
    """Everything wrong with a submission name (empty list when it is acceptable)."""
    problems = []
    shown = repr(name if len(name) <= 80 else name[:80] + "...")
    if not name:
        return ["name is empty. Give --name, e.g. --name my-team-v1."]
    if len(name) > MAX_NAME_LENGTH:
        problems.append(f"name {shown} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed.")
    if "/" in name or "\\" in name:
        problems.append(f"name {shown} contains a path separator; names cannot contain '/' or '\\'.")
    if ".." in name:
        problems.append(f"name {shown} contains '..'; use another spelling.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        problems.append(f"name {shown} contains control characters; use printable characters only.")
    if not problems and not _NAME_RE.fullmatch(name):
        problems.append(
            f"name {shown} has characters other than letters, digits, space and ._+()- or does not start with a letter or digit; "
            "e.g. --name 'my-team v2'."
        )
    return problems


def name_slug(name: str) -> str:
    """The folder-safe form of a validated name (lower case, spaces and parentheses as '-')."""
    slug = re.sub(r"[^a-z0-9._+-]+", "-", name.lower()).strip("-.")
    return slug or "submission"


# ------------------------------------------------------------------------------------ reading
def _lines(rows: np.ndarray | list[int]) -> str:
    """CSV line numbers (header = line 1) of 0-based data rows, capped at MAX_LISTED."""
    rows = list(rows)
    shown = ", ".join(str(int(r) + 2) for r in rows[:MAX_LISTED])
    more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return f"line{'s' if len(rows) > 1 else ''} {shown}{more}"


def _ids(ids: list[str] | np.ndarray) -> str:
    ids = list(ids)
    shown = ", ".join(repr(str(i)[:40]) for i in ids[:MAX_LISTED])
    more = f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
    return shown + more


def _read_untrusted_csv(path: Path, max_bytes: int, problems: list[str]) -> pd.DataFrame | None:
    """Read a size-checked CSV as strings; problems are appended, None when it cannot be read."""
    if not path.exists():
        problems.append(f"file {path} does not exist.")
        return None
    if not path.is_file():
        problems.append(f"{path} is not a regular file.")
        return None
    size = path.stat().st_size
    if size > max_bytes:
        problems.append(f"file is {size / 2**20:.1f} MiB; at most {max_bytes / 2**20:.0f} MiB is accepted. Submit only the columns asked for.")
        return None
    if size == 0:
        problems.append("file is empty. Write a CSV with a header line and one row per test lesion.")
        return None
    # Read at most max_bytes + 1 bytes: a file that grows after the size check is still bounded.
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        problems.append(f"file is larger than {max_bytes / 2**20:.0f} MiB, the most accepted. Submit only the columns asked for.")
        return None
    try:
        # Everything as text: numbers are parsed per cell below so bad cells can be named.
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig", skipinitialspace=True)
    except UnicodeDecodeError as exc:
        problems.append(f"file is not UTF-8 text ({exc.reason} at byte {exc.start}). Save it as a UTF-8 CSV.")
        return None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        problems.append(f"file could not be parsed as CSV ({type(exc).__name__}: {str(exc).strip()[:300]}). Check the delimiter (',') and quoting.")
        return None
    df.columns = [str(c).strip() for c in df.columns]
    dup_cols = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup_cols or any(re.fullmatch(r".+\.\d+", c) and c.rsplit(".", 1)[0] in df.columns for c in df.columns):
        problems.append(f"duplicate column names {dup_cols or '(pandas renamed repeats with .1 suffixes)'}; each column must appear once.")
    return df


def _registered_tasks_of(kind: TaskKind, n_classes: int | None = None) -> list[str]:
    from lesionbench.benchmark.plugins import TASKS

    out = []
    for name in TASKS.names():
        meta = getattr(TASKS.get(name), "meta", None)
        if isinstance(meta, TaskMeta) and meta.kind is kind and (n_classes is None or meta.n_classes == n_classes):
            out.append(name)
    return out


def _score_layout(meta: TaskMeta, columns: list[str], problems: list[str]) -> list[str] | None:
    """The score columns in class order, or None with problems (including wrong-task hints)."""
    cols = set(columns)
    try:
        return _stats.score_columns(meta, columns)
    except KeyError:
        pass
    if meta.kind is TaskKind.SURVIVAL:
        need = "a 'risk' column (higher = worse prognosis)"
    elif meta.kind is TaskKind.BINARY:
        need = "a 'score' column (probability of the positive class)"
    else:
        named = ", ".join(f"score_{c}" for c in meta.class_names)
        need = f"{meta.n_classes} columns {named} (or score_0 .. score_{meta.n_classes - 1}), one probability per class"
    msg = f"missing score columns: task {meta.name!r} ({meta.kind}) needs {need}; the file has {sorted(cols)[:20]}."
    # What the file looks like instead: a likely mix-up of tasks.
    multi = sorted(c for c in cols if c.startswith("score_"))
    looks: tuple[TaskKind, int | None] | None = None
    if "risk" in cols and meta.kind is not TaskKind.SURVIVAL:
        looks = (TaskKind.SURVIVAL, None)
    elif "score" in cols and meta.kind is not TaskKind.BINARY:
        looks = (TaskKind.BINARY, None)
    elif multi and (meta.kind is not TaskKind.MULTICLASS or len(multi) != meta.n_classes):
        looks = (TaskKind.MULTICLASS, len(multi))
    if looks is not None:
        kind, k = looks
        what = f"a {kind} task" + (f" with {k} classes" if k else "")
        others = [t for t in _registered_tasks_of(kind, k) if t != meta.name]
        msg += f" This looks like a submission for {what}" + (f" (e.g. {', '.join(others[:4])})" if others else "") + f", not for {meta.name!r}: wrong task?"
    problems.append(msg)
    return None


def _parse_numbers(df: pd.DataFrame, cols: list[str], problems: list[str], *, lo: float | None, hi: float | None) -> np.ndarray:
    out = np.full((len(df), len(cols)), np.nan)
    for j, c in enumerate(cols):
        raw = df[c].astype(str).str.strip()
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        empty = (raw == "").to_numpy()
        literal_nan = raw.str.lower().isin(["nan", "-nan", "+nan", "na", "n/a", "null", "none"]).to_numpy()
        text = np.isnan(vals) & ~empty & ~literal_nan
        if empty.any():
            problems.append(f"column {c!r}: empty value at {_lines(np.flatnonzero(empty))}. Every test lesion needs a score.")
        if text.any():
            ex = ", ".join(repr(v[:20]) for v in raw[text].head(3))
            problems.append(f"column {c!r}: not a number at {_lines(np.flatnonzero(text))} (got {ex}). Scores must be plain decimal numbers.")
        nonfinite = (np.isnan(vals) & literal_nan) | np.isinf(vals)
        if nonfinite.any():
            problems.append(f"column {c!r}: NaN or infinite value at {_lines(np.flatnonzero(nonfinite))}. Scores must be finite numbers.")
        finite = np.isfinite(vals)
        if lo is not None and hi is not None:
            out_of_range = finite & ((vals < lo) | (vals > hi))
            if out_of_range.any():
                ex = ", ".join(f"{v:g}" for v in vals[out_of_range][:3])
                problems.append(f"column {c!r}: {_lines(np.flatnonzero(out_of_range))} outside [{lo:g}, {hi:g}] (got {ex}). Give probabilities, not logits or percentages.")
        out[:, j] = vals
    return out


def _check_ids(df: pd.DataFrame, manifest: pd.DataFrame, splits: tuple[str, ...], problems: list[str], *, task_name: str) -> None:
    ids = df["lesion_id"].astype(str).str.strip()
    empty = (ids == "").to_numpy()
    if empty.any():
        problems.append(f"empty lesion_id at {_lines(np.flatnonzero(empty))}.")
    dup = ids.duplicated(keep=False).to_numpy() & ~empty
    if dup.any():
        problems.append(f"duplicate lesion_id(s) {_ids(sorted(set(ids[dup])))} at {_lines(np.flatnonzero(dup))}. Each lesion must appear exactly once.")
    all_ids = set(manifest["lesion_id"].astype(str))
    wanted = manifest.loc[manifest["split"].isin(splits), "lesion_id"].astype(str)
    wanted_set = set(wanted)
    given = set(ids[~empty])
    unknown = sorted(given - all_ids)
    other_split = sorted((given & all_ids) - wanted_set)
    missing = [i for i in wanted if i not in given]
    which = "test" if splits == ("test",) else "/".join(splits)
    if unknown:
        msg = f"{len(unknown)} unknown lesion_id(s) not in task {task_name!r}: {_ids(unknown)}."
        if len(unknown) > 0.5 * max(len(given), 1):
            msg += f" Most ids are not lesions of {task_name!r}: was this file made for another task or task version?"
        problems.append(msg)
    if other_split:
        problems.append(f"{len(other_split)} lesion_id(s) are not {which} lesions of {task_name!r}: {_ids(other_split)}. Submit {which} lesions only.")
    if missing:
        problems.append(f"{len(missing)} of {len(wanted)} {which} lesion(s) missing: {_ids(missing)}. Every {which} lesion needs exactly one row.")


def validate_predictions(path: str | Path, meta: TaskMeta, manifest: pd.DataFrame, *, max_bytes: int = MAX_SUBMISSION_BYTES, problems: list[str] | None = None) -> pd.DataFrame:
    """Check an untrusted predictions file against a task; return ``lesion_id`` + scores in manifest test order.

    Raises :class:`SubmissionError` listing every problem found (``problems`` seeds the list, e.g.
    with name problems, so one message reports everything).
    """
    path = Path(path)
    problems = list(problems or [])
    df = _read_untrusted_csv(path, max_bytes, problems)
    if df is None:
        raise SubmissionError(str(path), problems)
    cols: list[str] | None = None
    if "lesion_id" not in df.columns:
        problems.append(f"missing column 'lesion_id'; the file has {list(df.columns)[:20]}.")
    cols = _score_layout(meta, list(df.columns), problems)
    if len(df) == 0:
        problems.append("file has a header but no rows.")
    if "lesion_id" in df.columns:
        _check_ids(df, manifest, ("test",), problems, task_name=meta.name)
    if cols is not None:
        # A risk is any real number (higher = worse); everything else is a probability.
        parts = [_parse_numbers(df, [c], problems, lo=None if c == "risk" else 0.0, hi=None if c == "risk" else 1.0) for c in cols]
        values = np.hstack(parts)
        if meta.kind is TaskKind.MULTICLASS and np.isfinite(values).all():
            sums = values.sum(axis=1)
            off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
            if off.any():
                ex = ", ".join(f"{s:.3g}" for s in sums[off][:3])
                problems.append(f"class probabilities do not sum to 1 at {_lines(np.flatnonzero(off))} (sums {ex}); allowed deviation {ROW_SUM_TOLERANCE}. Apply softmax to logits.")
            else:
                values = values / sums[:, None]
    if problems:
        raise SubmissionError(str(path), problems)
    out = pd.DataFrame(values, columns=cols)
    out.insert(0, "lesion_id", df["lesion_id"].astype(str).str.strip().to_numpy())
    order = manifest.loc[manifest["split"] == "test", "lesion_id"].astype(str)
    return out.set_index("lesion_id").loc[order.to_numpy()].reset_index()


def validate_features(path: str | Path, manifest: pd.DataFrame, *, max_bytes: int = MAX_FEATURES_BYTES, problems: list[str] | None = None) -> pd.DataFrame:
    """Check an untrusted features file: ``lesion_id`` + numeric feature columns for every lesion of the task.

    Returns the features in manifest row order (``lesion_id`` first). Raises :class:`SubmissionError`.
    """
    path = Path(path)
    problems = list(problems or [])
    df = _read_untrusted_csv(path, max_bytes, problems)
    if df is None:
        raise SubmissionError(str(path), problems)
    feats = [c for c in df.columns if c != "lesion_id" and c not in ("patient_id", "split")]
    if "lesion_id" not in df.columns:
        problems.append(f"missing column 'lesion_id'; the file has {list(df.columns)[:20]}.")
    else:
        present = set(manifest["split"].astype(str))
        splits = tuple(x for x in ("train", "val", "test") if x in present)
        _check_ids(df, manifest, splits, problems, task_name="this task")
    if not feats:
        problems.append("no feature columns: give lesion_id plus one numeric column per feature.")
    values = _parse_numbers(df, feats, problems, lo=None, hi=None) if feats else np.empty((len(df), 0))
    if feats and np.isfinite(values).all() and len(df) > 1 and np.all(values.std(axis=0) == 0):
        problems.append("every feature is constant across lesions; this cannot be probed.")
    if problems:
        raise SubmissionError(str(path), problems)
    out = pd.DataFrame(values.astype(np.float32), columns=feats)
    out.insert(0, "lesion_id", df["lesion_id"].astype(str).str.strip().to_numpy())
    return out.set_index("lesion_id").loc[manifest["lesion_id"].astype(str).to_numpy()].reset_index()


# ------------------------------------------------------------------------- public / private
def _division_seed(meta: TaskMeta) -> int:
    return int.from_bytes(hashlib.sha256(f"lesionbench-public-private:{meta.name}:{meta.version}".encode()).digest()[:4], "big")


def public_private_split(meta: TaskMeta, manifest: pd.DataFrame) -> pd.Series:
    """True for test lesions in the public part, False for the private part (indexed by lesion_id).

    Patient-grouped and stratified by label, seeded by the task name and version (module docstring).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if len(test) < 4 or test["patient_id"].nunique() < 2:
        raise ConfigurationError(f"Task {meta.name!r} has {len(test)} test lesions from {test['patient_id'].nunique()} patients; a public/private division needs at least 4 lesions from 2 patients.")
    if meta.kind is TaskKind.SURVIVAL:
        lab = two_year_label(test["time"].to_numpy(dtype=float), test["event"].to_numpy(dtype=float))
        strata = np.where(np.isnan(lab), 2, lab).astype(int)
    else:
        strata = test["label"].to_numpy(dtype=float).astype(int)
    cv = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=_division_seed(meta) % (2**32 - 1))
    public_idx, _ = next(cv.split(np.zeros(len(test)), strata, groups=test["patient_id"].astype(str).to_numpy()))
    public = np.zeros(len(test), dtype=bool)
    public[public_idx] = True
    return pd.Series(public, index=test["lesion_id"].astype(str).to_numpy(), name="public")


# ---------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class SubmissionScore:
    """Metrics of one submission on the public part, the private part and the whole test set."""

    public: dict[str, MetricValue]
    private: dict[str, MetricValue]
    overall: dict[str, MetricValue]
    n_public: int
    n_private: int
    predictions: pd.DataFrame  # lesion_id, patient_id, split, labels, part, scores


def _metric_values(meta: TaskMeta, y: np.ndarray, s: np.ndarray, *, n_boot: int, seed: int, groups: np.ndarray | None) -> dict[str, MetricValue]:
    return _stats.metric_values(meta.kind, y, s, _stats.task_metrics(meta), n_boot=n_boot, seed=seed, groups=groups)


def score_predictions(
    meta: TaskMeta, manifest: pd.DataFrame, predictions: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, bootstrap_unit: str = "patient"
) -> SubmissionScore:
    """Score validated predictions (``validate_predictions`` output) with the harness's labels.

    The CIs resample ``bootstrap_unit``: whole test patients (default, as the scorer) or single lesions."""
    test = manifest[manifest["split"] == "test"].copy()
    test["lesion_id"] = test["lesion_id"].astype(str)
    merged = test.merge(predictions, on="lesion_id", how="left", validate="one_to_one")
    part = public_private_split(meta, manifest)
    merged["part"] = np.where(part.loc[merged["lesion_id"]].to_numpy(), "public", "private")
    label_cols = list(meta.label_columns)
    score_cols = [c for c in predictions.columns if c != "lesion_id"]
    table = merged[["lesion_id", "patient_id", "split", *label_cols, "part", *score_cols]].reset_index(drop=True)
    _, y, s = _stats.prediction_arrays(table, meta)
    pub = (table["part"] == "public").to_numpy()
    groups = _stats.bootstrap_groups(table, bootstrap_unit)
    part_groups = (None, None) if groups is None else (groups[pub], groups[~pub])
    return SubmissionScore(
        public=_metric_values(meta, y[pub], s[pub], n_boot=n_boot, seed=seed, groups=part_groups[0]),
        private=_metric_values(meta, y[~pub], s[~pub], n_boot=n_boot, seed=seed, groups=part_groups[1]),
        overall=_metric_values(meta, y, s, n_boot=n_boot, seed=seed, groups=groups),
        n_public=int(pub.sum()),
        n_private=int((~pub).sum()),
        predictions=table,
    )


# ------------------------------------------------------------------------------------ submit
@dataclass(frozen=True)
class SubmissionOutcome:
    """What ``submit`` produced: the result, its local file and the MLflow run id (if logged)."""

    result: TaskResult
    score: SubmissionScore
    result_path: Path | None
    run_id: str | None


def _mv_dict(d: dict[str, MetricValue]) -> dict[str, dict[str, float | None]]:
    return {m: {k: (v if math.isfinite(v) else None) for k, v in mv.to_dict().items()} for m, mv in d.items()}


def submit(
    task: Any,
    path: str | Path,
    *,
    name: str,
    kind: str = "predictions",
    results_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    max_bytes: int | None = None,
) -> SubmissionOutcome:
    """Validate, score and record one submission for ``task`` (an object with ``meta`` and ``manifest()``).

    ``kind``: ``"predictions"`` (a predictions CSV) or ``"features"`` (a features CSV scored by the
    standard linear probe at 100% labels). Nothing is written unless the file is valid. The result
    goes to ``<results_dir>/<task>/<task version>/submission-<slug>/<probe>/result.json`` (the scorer's layout) and/or to MLflow as a parent
    run tagged ``lesionbench.level=parent`` and ``lesionbench.submission=<name>``.
    """
    if kind not in ("predictions", "features"):
        raise ConfigurationError(f"Submission kind must be 'predictions' or 'features', got {kind!r}.")
    if results_dir is None and tracking_uri is None:
        raise ConfigurationError("A submission must be recorded somewhere: give --results DIR and/or --tracking-uri URI.")
    path = Path(path)
    meta: TaskMeta = task.meta
    manifest = task.manifest()
    problems = name_problems(name)
    if kind == "predictions":
        preds = validate_predictions(path, meta, manifest, max_bytes=max_bytes or MAX_SUBMISSION_BYTES, problems=problems)
        probe = "submitted"
    else:
        features = validate_features(path, manifest, max_bytes=max_bytes or MAX_FEATURES_BYTES, problems=problems)
        preds = _probe_features(task, manifest, features)
        probe = "linear"
    score = score_predictions(meta, manifest, preds, n_boot=n_boot, seed=seed)
    digest = sha256_file(path)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run = SubsetResult(fraction=1.0, seed=0, n_train=int((manifest["split"] == "train").sum()) if kind == "features" else 0, metrics=score.public, params={"part": "public"}, predictions_path="predictions.csv")
    result = TaskResult(
        task=meta,
        encoder=EncoderMeta(name=f"submission:{name}", version="submitted", feature_dim=int(preds.shape[1] - 1) if kind == "features" else 0, description=f"{kind} submission {name!r}"),
        probe=probe,
        runs=(run,),
        lesionbench_version=__version__,
        created=now,
        extra={
            "submission": {
                "name": name,
                "kind": kind,
                "file_sha256": digest,
                "n_public": score.n_public,
                "n_private": score.n_private,
                "public": _mv_dict(score.public),
                "private": _mv_dict(score.private),
                "public_ids_sha256": hashlib.sha256("\n".join(score.predictions.loc[score.predictions["part"] == "public", "lesion_id"]).encode()).hexdigest(),
            }
        },
    )
    result_path = None
    if results_dir is not None:
        from lesionbench.benchmark.scorer import result_dir

        folder = result_dir(Path(results_dir), meta.name, meta.version, f"submission-{name_slug(name)}", probe)
        folder.mkdir(parents=True, exist_ok=True)
        score.predictions.to_csv(folder / "predictions.csv", index=False)
        result_path = folder / "result.json"
        result_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    run_id = None
    if tracking_uri is not None:
        run_id = _log_submission(result, score, absolute_sqlite_uri(tracking_uri))
    main = _stats.main_metric(meta)
    logger.info("Submission %r scored on task %s: public %s = %.4f.", name, meta.name, main, score.public[main].value)
    return SubmissionOutcome(result, score, result_path, run_id)


def _probe_features(task: Any, manifest: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Test-lesion predictions of the standard probe fitted on submitted features (100% labels, seed 0).

    Uses the scorer's :func:`lesionbench.benchmark.scorer.evaluate_features` (C chosen on the
    validation split, exactly as for any encoder) in a scratch folder, so nothing of a failed
    submission is left behind.
    """
    import tempfile

    try:
        from lesionbench.benchmark.scorer import evaluate_features, result_dir
    except ImportError as exc:
        raise ConfigurationError(
            "Feature submissions are scored by the standard probe of lesionbench.benchmark.scorer, which this installation "
            f"does not have ({exc}). Submit predictions instead, or update lesionbench."
        ) from exc
    meta: TaskMeta = task.meta
    X = features.drop(columns=["lesion_id"]).to_numpy(dtype=np.float32)
    enc = EncoderMeta(name="submitted-features", version="submitted", feature_dim=X.shape[1])
    with tempfile.TemporaryDirectory(prefix="lesionbench-submit-") as tmp:
        result = evaluate_features(
            manifest.reset_index(drop=True), X, meta, encoder=enc, fractions=(1.0,), seeds=(0,), out_dir=Path(tmp), n_boot=0, progress=False, resume=False
        )
        run = result.runs[0]
        folder = result_dir(Path(tmp), meta.name, meta.version, enc.name, result.probe)
        table = pd.read_csv(folder / run.predictions_path, dtype={"lesion_id": str, "patient_id": str})
    test = table[table["split"] == "test"]
    cols = _stats.score_columns(meta, list(test.columns))
    return test[["lesion_id", *cols]].reset_index(drop=True)


#: The MLflow experiment the scorer logs runs to; submissions join them there.
EXPERIMENT = "lesionbench"


def _log_submission(result: TaskResult, score: SubmissionScore, tracking_uri: str) -> str | None:
    """Log the submission as an MLflow parent run; a failed write warns and keeps the local result."""
    import tempfile
    import warnings

    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(EXPERIMENT, artifact_location=artifact_location(tracking_uri, EXPERIMENT))
        sub = result.extra["submission"]
        run = client.create_run(
            exp_id,
            run_name=f"submission {sub['name']}",
            tags={"lesionbench.level": "parent", "lesionbench.submission": sub["name"], "lesionbench.task": result.task.name, "lesionbench.encoder": result.encoder.name},
        )
        rid = run.info.run_id
        for k, v in {
            "task": result.task.name,
            "task_version": result.task.version,
            "encoder": result.encoder.name,
            "probe": result.probe,
            "submission_kind": sub["kind"],
            "file_sha256": sub["file_sha256"],
            "n_public": sub["n_public"],
            "n_private": sub["n_private"],
            "lesionbench_version": result.lesionbench_version,
        }.items():
            client.log_param(rid, k, v)
        for part, values in (("public", score.public), ("private", score.private)):
            for m, mv in values.items():
                for suffix, x in (("", mv.value), ("_ci_low", mv.ci_low), ("_ci_high", mv.ci_high)):
                    if math.isfinite(x):
                        client.log_metric(rid, f"{part}_{m}{suffix}", x)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
            score.predictions.to_csv(Path(tmp) / "predictions.csv", index=False)
            client.log_artifact(rid, str(Path(tmp) / "result.json"))
            client.log_artifact(rid, str(Path(tmp) / "predictions.csv"))
        client.set_terminated(rid)
        return rid
    except Exception as exc:  # MLflow is a sink: never lose a scored submission to it
        warnings.warn(f"Could not log the submission to MLflow at {tracking_uri} ({type(exc).__name__}: {exc}); the local result is kept.", stacklevel=2)
        return None
