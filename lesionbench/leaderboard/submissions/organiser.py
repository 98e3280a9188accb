"""The organiser store: private scores, labelled predictions and the ledger that quotas count.

The public store (results folder and MLflow experiment ``lesionbench``) holds public scores and
label-free predictions only; everything that reveals the private part or the test labels lives here::

    <organiser dir>/                          # created with mode 0700, files 0600: organiser-only
      challenge.toml | challenge.json         # optional quotas (lesionbench.leaderboard.submissions.challenge)
      <task>/<version>/.lock                  # serialises quota check + write
      <task>/<version>/teams/<slug>/team.json        # the team name that owns the slug
      <task>/<version>/teams/<slug>/selection.json   # the submissions the team selected (optional)
      <task>/<version>/teams/<slug>/sub-0001/record.json, predictions.csv (labels + public/private part)

and, when an organiser tracking URI is given, one MLflow run per submission in the experiment
``lesionbench-organiser`` of that (separate) store. ``record.json`` is written last and atomically:
a submission counts once its record exists, and every scored submission gets one before anything
public is written, so a crash can never give a team a free submission.

Default location: ``lesionbench-organiser`` beside the results folder (``./lesionbench-organiser``
for the CLI), else beside a sqlite MLflow store. Never publish it. An existing folder is used only when
it is the current user's with no group or other access (:mod:`lesionbench.leaderboard.submissions.private_dir`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.types import MetricValue
from lesionbench.leaderboard.submissions.challenge import ChallengeConfig, Limits, as_utc, resolve_challenge, utc_now
from lesionbench.leaderboard.submissions.private_dir import DIR_MODE, FILE_MODE, check_apart, check_private_file, check_private_folder, make_private_dirs  # noqa: F401 - check_apart: the API in one place

if TYPE_CHECKING:
    from lesionbench.leaderboard.collect import LoadedResult

logger = logging.getLogger(__name__)

FOLDER_NAME = "lesionbench-organiser"
EXPERIMENT = "lesionbench-organiser"
RECORD = "record.json"
_ID_RE = re.compile(r"sub-(\d{4,})")


def resolve_organiser_dir(organiser_dir: str | Path | None, *, results_dir: str | Path | None = None, tracking_uri: str | None = None) -> Path:
    """``organiser_dir``, else ``lesionbench-organiser`` beside the results folder, else beside a sqlite MLflow store."""
    if organiser_dir is not None:
        return Path(organiser_dir)
    if results_dir is not None:
        return Path(results_dir).resolve().parent / FOLDER_NAME
    m = re.match(r"sqlite:///(.+)$", tracking_uri or "")
    if m:
        return Path(m.group(1)).expanduser().resolve().parent / FOLDER_NAME
    raise ConfigurationError("Give an organiser folder (--organiser-dir DIR): private scores and the submission ledger are kept there, apart from the public store.")


def metric_dict(d: dict[str, MetricValue]) -> dict[str, dict[str, float | None]]:
    """MetricValues as JSON (non-finite values as null)."""
    return {m: {k: (v if math.isfinite(v) else None) for k, v in mv.to_dict().items()} for m, mv in d.items()}


@dataclass(frozen=True)
class SubmissionRecord:
    """One scored submission as the organiser store holds it (``record.json``)."""

    id: str
    team: str
    task: str
    version: str
    kind: str
    submitted: str  # ISO 8601, UTC
    main_metric: str
    public: dict[str, Any]
    private: dict[str, Any]
    n_public: int
    n_private: int
    folder: Path
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the whole record.json

    def score(self, part: str) -> float:
        """The main metric on ``part`` ('public' or 'private'); -inf when undefined, so it ranks last."""
        v = (getattr(self, part).get(self.main_metric) or {}).get("value")
        return -math.inf if v is None or not math.isfinite(v) else float(v)

    def submitted_at(self) -> datetime:
        return as_utc(datetime.fromisoformat(self.submitted))


class OrganiserStore:
    """The organiser folder (module docstring). Team folders are keyed by the name's slug."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        check_private_folder(self.root)  # before anything of it is read or written
        from lesionbench.leaderboard.submissions.challenge import CONFIG_NAMES

        for name in CONFIG_NAMES:
            check_private_file(self.root / name)

    def team_dir(self, task: str, version: str, slug: str) -> Path:
        from lesionbench.benchmark.scoring.scorer import result_dir

        return result_dir(self.root, task, version, "teams", slug)

    def team_name(self, task: str, version: str, slug: str) -> str | None:
        path = self.team_dir(task, version, slug) / "team.json"
        return str(_read_json(path)["name"]) if path.is_file() else None

    def records(self, task: str, version: str, slug: str) -> list[SubmissionRecord]:
        """The team's scored submissions, oldest first."""
        base = self.team_dir(task, version, slug)
        out = []
        for path in sorted(base.glob(f"sub-*/{RECORD}")) if base.is_dir() else []:
            d = _read_json(path)
            try:
                out.append(SubmissionRecord(
                    id=d["id"], team=d["team"], task=d["task"], version=d["version"], kind=d["kind"], submitted=d["submitted"], main_metric=d["main_metric"],
                    public=d["public"], private=d["private"], n_public=int(d["n_public"]), n_private=int(d["n_private"]), folder=path.parent, raw=d,
                ))  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigurationError(f"Organiser record {path} is damaged ({type(exc).__name__}: {exc}); restore it from a backup.") from exc
        return sorted(out, key=lambda r: int(_ID_RE.fullmatch(r.id).group(1)) if _ID_RE.fullmatch(r.id) else 0)

    def same_as(self, task: str, version: str, slug: str, digests: Sequence[str]) -> list[str]:
        """``"<team> <id>"`` of the other teams' submissions of this task version whose file or predictions digest
        is among ``digests`` (a copied file, or the same predictions rewritten): flagged to the organiser."""
        teams = self.team_dir(task, version, slug).parent
        found = []
        for other in sorted(p for p in teams.iterdir() if p.is_dir() and p.name != slug) if teams.is_dir() else []:
            for r in self.records(task, version, other.name):
                if {r.raw.get("file_sha256"), r.raw.get("predictions_sha256")} & set(digests):
                    found.append(f"{r.team} {r.id}")
        return found

    @contextlib.contextmanager
    def lock(self, task: str, version: str) -> Iterator[None]:
        """An exclusive lock per task version: two submissions of one team cannot both pass the quota."""
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        path = self.team_dir(task, version, "_").parent.parent / ".lock"
        make_private_dirs(path.parent)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "a") as fh:
            try:
                import fcntl
            except ImportError:  # not POSIX: no inter-process lock, the quota check is still made
                yield
                return
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write_submission(self, task: str, version: str, slug: str, record: dict[str, Any], predictions: Any) -> SubmissionRecord:
        """Store a scored submission under the next id (call under :meth:`lock`); ``record`` lacks ``id``."""
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        team = self.team_dir(task, version, slug)
        make_private_dirs(team)
        if not (team / "team.json").is_file():
            atomic_write(team / "team.json", lambda p: p.write_text(json.dumps({"name": record["team"], "created": record["submitted"]}) + "\n"), mode=FILE_MODE)
        previous = self.records(task, version, slug)
        number = 1 + max((int(m.group(1)) for r in previous if (m := _ID_RE.fullmatch(r.id))), default=0)
        # Folders without a record (a crash half-way) keep their number: ids are never reused.
        number = max(number, 1 + max((int(m.group(1)) for p in team.glob("sub-*") if (m := _ID_RE.fullmatch(p.name))), default=0))
        sid = f"sub-{number:04d}"
        folder = team / sid
        make_private_dirs(folder)
        atomic_write(folder / "predictions.csv", lambda p: predictions.to_csv(p, index=False), mode=FILE_MODE)
        doc = {"id": sid, **record}
        atomic_write(folder / RECORD, lambda p: p.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n"), mode=FILE_MODE)
        return next(r for r in self.records(task, version, slug) if r.id == sid)

    def selection(self, task: str, version: str, slug: str) -> list[str] | None:
        path = self.team_dir(task, version, slug) / "selection.json"
        return [str(x) for x in _read_json(path)["selected"]] if path.is_file() else None


def _read_json(path: Path) -> Any:
    """An organiser file; damage is a clear error, since quotas and private scores depend on it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Organiser file {path} cannot be read ({type(exc).__name__}: {exc}); restore it from a backup.") from exc


# ------------------------------------------------------------------------------ names, quotas
def collision_problem(store: OrganiserStore, public_folder: Path | None, *, task: str, version: str, name: str, slug: str) -> str | None:
    """Why ``name`` may not submit: another team's name maps to the same folder (None when it may)."""
    owners = []
    owner = store.team_name(task, version, slug)
    if owner is not None:
        owners.append(owner)
    if public_folder is not None:
        for path in sorted(public_folder.glob("*/result.json")):
            try:
                owners.append(str(json.loads(path.read_text())["extra"]["submission"]["name"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a readable submission result: nothing to protect
    other = next((o for o in owners if o != name), None)
    if other is None:
        return None
    return (
        f"team name {name!r} maps to the folder 'submission-{slug}' of the existing team {other!r} "
        f"(names are compared in lower case with spaces and brackets as '-'). Resubmit as {other!r} if it is your team, else choose another name."
    )


def quota_problem(records: Sequence[SubmissionRecord], limits: Limits, *, team: str, task: str, now: datetime) -> str | None:
    """Why one more submission exceeds the team's quota or comes after the deadline (None when neither)."""
    closed = deadline_problem(limits, task=task, now=now, what="submissions")
    if closed:
        return closed
    if len(records) >= limits.total:
        return f"team {team!r} has used all {limits.total} submissions allowed on task {task!r}; no more are accepted."
    now = as_utc(now)
    # a record dated after today (the clock was set back) counts against today: never a fresh quota
    today = [r for r in records if _day(r) >= now.date()]
    if len(today) >= limits.per_day:
        tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
        return (
            f"team {team!r} has used its {limits.per_day} submissions of {now.date().isoformat()} (UTC) on task {task!r}; "
            f"the next one is accepted from {tomorrow:%Y-%m-%d %H:%M} UTC ({len(records)} of {limits.total} used in total)."
        )
    return None


def deadline_problem(limits: Limits, *, task: str, now: datetime, what: str) -> str | None:
    if limits.deadline is not None and as_utc(now) >= limits.deadline:
        return f"task {task!r} closed for {what} at {limits.deadline:%Y-%m-%d %H:%M} UTC (the challenge deadline)."
    return None


def _day(record: SubmissionRecord) -> Any:
    try:
        return record.submitted_at().date()
    except ValueError:  # a damaged date must not hand out a free submission: count it for today
        logger.warning("Submission %s has an unreadable date %r; counted for today.", record.folder, record.submitted)
        return as_utc(datetime.now()).date()


# -------------------------------------------------------------------------- final selection
def select(
    organiser_dir: str | Path, *, task: str, version: str, team: str, slug: str, ids: Sequence[str],
    challenge: ChallengeConfig | str | Path | None = None, now: datetime | None = None,
) -> list[str]:  # fmt: skip
    """Select the team's submissions that count for the final, private ranking (replaces an earlier choice).

    An empty ``ids`` clears the choice, so the default (best public scores) applies again. After the
    challenge's deadline (``now``, default the clock) the choice is frozen.
    """
    store = OrganiserStore(organiser_dir)
    owner = store.team_name(task, version, slug)
    if owner is None:
        raise ConfigurationError(f"Team {team!r} has no submissions on task {task!r} (version {version}) in {store.root}.")
    if owner != team:
        raise ConfigurationError(f"Team name {team!r} does not match the team {owner!r} that owns this folder; give the exact name it submitted under.")
    limits = resolve_challenge(challenge, store.root).for_task(task)
    closed = deadline_problem(limits, task=task, now=now or utc_now(), what="changes of the selection")
    if closed:
        raise ConfigurationError(closed[0].upper() + closed[1:])
    known = {r.id for r in store.records(task, version, slug)}
    ids = list(dict.fromkeys(ids))  # a repeated id counts once
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ConfigurationError(f"Unknown submission id(s) {unknown} of team {team!r} on task {task!r}; the team's submissions are {sorted(known)}.")
    if len(ids) > limits.max_selected:
        raise ConfigurationError(f"{len(ids)} submissions selected; at most {limits.max_selected} may count for the final ranking of task {task!r}.")
    path = store.team_dir(task, version, slug) / "selection.json"
    with store.lock(task, version):
        if ids:
            atomic_write(path, lambda p: p.write_text(json.dumps({"selected": ids}) + "\n"), mode=FILE_MODE)
        elif path.exists():
            path.unlink()
    return ids


def team_submissions(organiser_dir: str | Path, *, task: str, version: str, team: str, slug: str, challenge: ChallengeConfig | str | Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """What a team may see of its own submissions: id, time, kind, public main score and whether it counts
    for the final ranking (never a private score), and how the counting ones were chosen."""
    store = OrganiserStore(organiser_dir)
    owner = store.team_name(task, version, slug)
    if owner is None or owner != team:
        raise ConfigurationError(f"Team {team!r} has no submissions on task {task!r} (version {version}) in {store.root}" + (f"; the folder belongs to {owner!r}." if owner else "."))
    records = store.records(task, version, slug)
    chosen, how = final_submissions(records, store.selection(task, version, slug), resolve_challenge(challenge, store.root).for_task(task).max_selected)
    counted = {r.id for r in chosen}
    rows = [{"id": r.id, "submitted": r.submitted, "kind": r.kind, "metric": r.main_metric, "public": r.public.get(r.main_metric, {}).get("value"), "counts": r.id in counted} for r in records]
    return rows, how


def final_submissions(records: Sequence[SubmissionRecord], selection: Sequence[str] | None, max_selected: int) -> tuple[list[SubmissionRecord], str]:
    """The submissions that count and how they were chosen.

    The team's selection when it made one; otherwise, as on Kaggle, its ``max_selected`` best
    public scores (ties: the earlier submission).
    """
    if selection:
        chosen = [r for r in records if r.id in set(selection)]
        if chosen:
            return chosen, "selected by the team"
    best = sorted(records, key=lambda r: -r.score("public"))  # stable: earlier first among ties
    return best[:max_selected], f"best {max_selected} public score(s) (none selected)"


def private_scores(organiser_dir: str | Path, *, challenge: ChallengeConfig | str | Path | None = None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(task, version, team name) -> the team's final private score: the best private main metric of the
    submissions that count (:func:`final_submissions`), with ``n_private``, ``submission_id`` and ``selection``."""
    store = OrganiserStore(organiser_dir)
    if not store.root.is_dir():
        raise ConfigurationError(f"No organiser store at {store.root}: --reveal reads private scores from there. Give the --organiser-dir that `lesionbench submit` wrote to.")
    config = resolve_challenge(challenge, store.root)
    out = {}
    for task_dir in sorted(p for p in store.root.iterdir() if p.is_dir()):
        for version_dir in sorted(p for p in task_dir.iterdir() if (p / "teams").is_dir()):
            for team_dir in sorted((version_dir / "teams").iterdir()):
                records = store.records(task_dir.name, version_dir.name, team_dir.name)
                if not records:
                    continue
                first = records[0]
                chosen, how = final_submissions(records, store.selection(task_dir.name, version_dir.name, team_dir.name), config.for_task(first.task).max_selected)
                best = max(chosen, key=lambda r: r.score("private"))
                out[(first.task, first.version, first.team)] = {
                    "private": best.private, "n_private": best.n_private, "submission_id": best.id, "selection": how,
                    "main_metric": best.main_metric, "score": None if best.score("private") == -math.inf else best.score("private"),
                    # the same file or predictions as another team's submission (a copy): for the organiser to judge
                    "same_file_as": sorted({x for r in records for x in r.raw.get("same_file_as", [])}),
                }  # fmt: skip
    return out


def final_ranking(organiser_dir: str | Path, task: str, version: str, *, challenge: ChallengeConfig | str | Path | None = None) -> list[dict[str, Any]]:
    """The final ranking of one task version on the private part: one row per team, best first (equal scores share a rank)."""
    rows = [{"team": team, **v} for (t, ver, team), v in private_scores(organiser_dir, challenge=challenge).items() if (t, ver) == (task, version)]
    main = lambda row: -math.inf if row["score"] is None else row["score"]
    rows.sort(key=lambda r: (-main(r), r["team"]))
    for row in rows:
        row["rank"] = 1 + sum(1 for other in rows if main(other) > main(row))
    return rows


def reveal_private(items: Sequence[LoadedResult], organiser_dir: str | Path, *, challenge: ChallengeConfig | str | Path | None = None) -> list[LoadedResult]:
    """The leaderboard's results with each submission's private score taken from the organiser store
    (the hook ``leaderboard build --reveal`` calls); a private score in a public file is never used."""
    scores = private_scores(organiser_dir, challenge=challenge)
    out = []
    for item in items:
        sub = item.submission
        if sub is not None:
            final = scores.get((item.result.task.name, item.result.task.version, str(sub.get("name"))), {})
            sub = {**sub, "private": final.get("private"), "n_private": final.get("n_private", 0), "final_submission": final.get("submission_id"),
                   "same_file_as": final.get("same_file_as", [])}  # fmt: skip
            item = replace(item, result=replace(item.result, extra={**item.result.extra, "submission": sub}))
        out.append(item)
    return out


# ---------------------------------------------------------------------------------- MLflow
def log_run(tracking_uri: str, experiment: str, *, run_name: str, tags: dict[str, str], params: dict[str, Any], metrics: dict[str, float], files: dict[str, Any]) -> str | None:
    """One finished MLflow run with params, finite metrics and files (name -> ``write(path)``).

    MLflow is a sink: a failed write warns and returns None, the caller keeps its local record.
    """
    import tempfile
    import warnings

    from lesionbench.benchmark.tracking.mlflow_sink import artifact_location

    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri, experiment))
        rid = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        for k, v in params.items():
            client.log_param(rid, k, v)
        for k, x in metrics.items():
            if x is not None and math.isfinite(x):
                client.log_metric(rid, k, x)
        with tempfile.TemporaryDirectory() as tmp:
            for name, write in files.items():
                write(Path(tmp) / name)
                client.log_artifact(rid, str(Path(tmp) / name))
        client.set_terminated(rid)
        return rid
    except Exception as exc:  # MLflow is a sink: never lose a scored submission to it
        from lesionbench.benchmark.tracking.mlflow_sink import redact_uri

        warnings.warn(f"Could not log to MLflow at {redact_uri(tracking_uri)} ({type(exc).__name__}: {redact_uri(str(exc))}); the local record is kept.", stacklevel=3)
        return None


def metrics_flat(parts: dict[str, dict[str, MetricValue]]) -> dict[str, float]:
    """``{"public": {"auc": mv}}`` -> ``{"public_auc": v, "public_auc_ci_low": ..., ...}``."""
    return {
        f"{part}_{m}{suffix}": x
        for part, values in parts.items()
        for m, mv in values.items()
        for suffix, x in (("", mv.value), ("_ci_low", mv.ci_low), ("_ci_high", mv.ci_high))
    }


def organiser_tracking_default(organiser_dir: Path) -> str:
    """The organiser's own sqlite MLflow store inside the organiser folder."""
    return f"sqlite:///{Path(organiser_dir).resolve() / 'mlflow.db'}"

