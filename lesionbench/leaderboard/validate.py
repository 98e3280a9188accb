"""Check a ``result.json`` against the published result format before the leaderboard trusts it.

A result file comes from many hands (a shared results folder, a shared tracking server), so the
leaderboard reads it as untrusted input: JSON of the right shape (types, ranges, known metric names,
fractions in (0, 1], integer seeds, ordered CI bounds, a past creation date) carrying the provenance
that ``lesionbench run`` and ``lesionbench submit`` write. Anything else raises :class:`ResultFileError`
naming the file and the first field that is wrong; the caller skips the file with one warning.

The format is published as a JSON Schema (:data:`lesionbench.leaderboard.schema.RESULT_SCHEMA`, written
as ``result.schema.json`` beside the leaderboard); these checks are that schema plus what a JSON Schema
cannot say, without making ``jsonschema`` a dependency (the tests hold the two together).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.types import TaskKind, TaskResult

RESULT_SCHEMA_ID = "lesionbench.task_result/1"
#: Longest name (task, encoder, probe, team) a result may carry: longer ones are not names.
MAX_NAME = 200
#: A result dated later than this after now was not produced by this harness's clock (a forged date in the
#: future would win every "newest result" comparison forever).
_CLOCK_SKEW = timedelta(minutes=5)
#: A path a result names (its predictions, subsets): relative, inside its own result folder or run.
_SAFE_PATH = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*(/[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BOOTSTRAP_UNITS = ("patient", "lesion")
_VALIDATION = ("fraction", "full")
_SUBMISSION_KINDS = ("predictions", "features")


class ResultFileError(LesionbenchError, ValueError):
    """A result file that is not a well-formed lesionbench result (``source``: the file or run; ``field``: where)."""

    def __init__(self, source: str, field: str, problem: str):
        self.source, self.field = source, field
        super().__init__(f"{source}: not a valid lesionbench result: {field}: {problem}")


def parse_result(raw: bytes | str, source: str) -> TaskResult:
    """The :class:`TaskResult` in ``raw`` (the bytes of a ``result.json``), checked; raises :class:`ResultFileError`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ResultFileError(source, "file", f"not UTF-8 JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    check_result(doc, source)
    try:
        return TaskResult.from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:  # a shape check_result does not know yet
        raise ResultFileError(source, "file", f"{type(exc).__name__}: {str(exc)[:120]}") from None


def check_result(doc: Any, source: str) -> None:
    """Raise :class:`ResultFileError` for the first field of ``doc`` that breaks the result format."""
    c = _Checker(source)
    c.obj(doc, "result")
    if doc.get("schema") != RESULT_SCHEMA_ID:
        c.fail("schema", f"expected {RESULT_SCHEMA_ID!r}, got {_show(doc.get('schema'))} (files of `lesionbench run` / `submit` carry it)")
    task = c.obj(doc.get("task"), "task")
    for k in ("name", "version"):
        c.name(task.get(k), f"task.{k}")
    if task.get("kind") not in tuple(TaskKind):
        c.fail("task.kind", f"expected one of {', '.join(TaskKind)}, got {_show(task.get('kind'))}")
    for k in ("description", "citation", "main_metric"):
        c.text(task.get(k, ""), f"task.{k}")
    if task.get("main_metric"):
        c.metric(task["main_metric"], "task.main_metric", alias_ok=True)
    for i, m in enumerate(c.array(task.get("metrics", []), "task.metrics")):
        c.metric(m, f"task.metrics[{i}]", alias_ok=True)
    for i, n in enumerate(c.array(task.get("class_names", []), "task.class_names")):
        c.name(n, f"task.class_names[{i}]")
    c.boolean(task.get("published_split", False), "task.published_split")

    enc = c.obj(doc.get("encoder"), "encoder")
    c.name(enc.get("name"), "encoder.name")
    c.name(enc.get("version"), "encoder.version")
    c.integer(enc.get("feature_dim"), "encoder.feature_dim", low=0)
    if enc.get("weights_sha256"):  # a sha256, or a label of weights without a file ("random-init-seed-0")
        c.name(enc["weights_sha256"], "encoder.weights_sha256")
    for k in ("description", "citation"):
        c.text(enc.get(k, ""), f"encoder.{k}")
    c.obj(enc.get("patch", {}), "encoder.patch")
    for i, kv in enumerate(c.array(enc.get("settings", []), "encoder.settings")):
        if not (isinstance(kv, list) and len(kv) == 2 and all(isinstance(x, str) for x in kv)):
            c.fail(f"encoder.settings[{i}]", f"expected a [name, value] pair of strings, got {_show(kv)}")
    c.name(doc.get("probe"), "probe")
    c.name(doc.get("lesionbench_version"), "lesionbench_version")
    c.created(doc.get("created"), "created")
    c.text(doc.get("split_hash", ""), "split_hash")
    for i, p in enumerate(c.array(doc.get("leaked_patients", []), "leaked_patients")):
        c.text(p, f"leaked_patients[{i}]")
    extra = c.obj(doc.get("extra", {}), "extra")

    runs = c.array(doc.get("runs"), "runs")
    if not runs:
        c.fail("runs", "empty: a result holds at least one (fraction, seed) run")
    seen: set[tuple[float, int]] = set()
    for i, run in enumerate(runs):
        where = f"runs[{i}]"
        c.obj(run, where)
        frac = c.number(run.get("fraction"), f"{where}.fraction")
        if not 0 < frac <= 1:
            c.fail(f"{where}.fraction", f"expected a training fraction in (0, 1], got {_show(frac)}")
        seed = c.integer(run.get("seed"), f"{where}.seed")
        c.integer(run.get("n_train"), f"{where}.n_train", low=0)
        if run.get("shots") is not None:  # k of a k-shot run (absent, or null, for fraction runs)
            c.integer(run["shots"], f"{where}.shots", low=1)
        if (frac, seed) in seen:
            c.fail(where, f"a second run with fraction {frac:g} and seed {seed}")
        seen.add((frac, seed))
        metrics = c.obj(run.get("metrics"), f"{where}.metrics")
        if not metrics:
            c.fail(f"{where}.metrics", "empty")
        for m, mv in metrics.items():
            c.metric(m, f"{where}.metrics key")
            c.metric_value(mv, f"{where}.metrics.{m}")
        params = c.obj(run.get("params", {}), f"{where}.params")
        for k in ("predictions_path", "subset_path"):
            c.path(run.get(k, ""), f"{where}.{k}")
        for k, v in params.items():
            if str(k).endswith("_path"):
                c.path(v, f"{where}.params.{k}")

    sub = extra.get("submission")
    if sub is None:
        # provenance every `lesionbench run` writes: the split, and how the intervals were drawn
        if not (isinstance(doc.get("split_hash"), str) and doc["split_hash"]):
            c.fail("split_hash", "missing: results of `lesionbench run` record the hash of their split; run it again to rewrite this result")
        rerun = "results of `lesionbench run` record it; run it again to rewrite this result"
        if "n_boot" not in extra or "bootstrap_unit" not in extra:
            c.fail("extra.n_boot" if "n_boot" not in extra else "extra.bootstrap_unit", f"missing: {rerun}")
        c.integer(extra.get("n_boot"), "extra.n_boot", low=0)
        if extra.get("bootstrap_unit") not in _BOOTSTRAP_UNITS:
            c.fail("extra.bootstrap_unit", f"expected one of {', '.join(_BOOTSTRAP_UNITS)}, got {_show(extra.get('bootstrap_unit'))}")
    else:
        c.obj(sub, "extra.submission")
        c.name(sub.get("name"), "extra.submission.name", limit=64)
        if sub.get("kind") not in _SUBMISSION_KINDS:
            c.fail("extra.submission.kind", f"expected one of {', '.join(_SUBMISSION_KINDS)}, got {_show(sub.get('kind'))}")
        if not (isinstance(sub.get("file_sha256"), str) and _SHA256.fullmatch(sub["file_sha256"])):
            c.fail("extra.submission.file_sha256", f"expected the submitted file's sha256, got {_show(sub.get('file_sha256'))}")
        c.integer(sub.get("n_public"), "extra.submission.n_public", low=0)
        for part in ("public", "private"):
            for m, mv in c.obj(sub.get(part) or {}, f"extra.submission.{part}").items():
                c.metric(m, f"extra.submission.{part} key")
                c.metric_value(mv, f"extra.submission.{part}.{m}")
    if "validation" in extra and extra["validation"] not in _VALIDATION:
        c.fail("extra.validation", f"expected one of {', '.join(_VALIDATION)}, got {_show(extra['validation'])}")


def _show(x: Any) -> str:
    s = repr(x)
    return s if len(s) <= 60 else s[:57] + "..."


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, problem: str) -> None:
        raise ResultFileError(self.source, field, problem)

    def obj(self, x: Any, field: str) -> dict[str, Any]:
        if not isinstance(x, dict):
            self.fail(field, f"expected an object, got {_show(x)}")
        return x

    def array(self, x: Any, field: str) -> list[Any]:
        if not isinstance(x, list):
            self.fail(field, f"expected a list, got {_show(x)}")
        return x

    def text(self, x: Any, field: str) -> str:
        if not isinstance(x, str):
            self.fail(field, f"expected a string, got {_show(x)}")
        return x

    def name(self, x: Any, field: str, *, limit: int = MAX_NAME) -> str:
        """A name: printable, and by the registry's rule (no zero-width, bidirectional or other invisible
        characters, no surrounding spaces), so that no two rows that differ can read the same."""
        from lesionbench.benchmark.encoders.registry import name_problem

        s = self.text(x, field)
        if not s.strip() or len(s) > limit or any(ord(ch) < 32 for ch in s):
            self.fail(field, f"expected a non-empty name of at most {limit} printable characters, got {_show(x)}")
        # the registry's rule; a name longer than the registry's 64 characters (a version, a weights label) is
        # checked piecewise for the characters the rule forbids
        why = name_problem(s) if len(s) <= 64 else next((w for i in range(0, len(s), 64) if (w := name_problem(s[i : i + 64].strip() or "x")) and "characters long" not in w), None)
        if why is None and s != s.strip():
            why = f"the name {s[:40]!r} has leading or trailing whitespace"
        if why is not None:
            self.fail(field, why)
        return s

    def path(self, x: Any, field: str) -> str:
        """A path a result names: empty, or relative without ``..`` (it is read inside the result's own folder or run)."""
        s = self.text(x, field)
        if s and (not _SAFE_PATH.fullmatch(s) or any(part in (".", "..") for part in s.split("/"))):
            self.fail(field, f"expected a relative path inside the result's folder (letters, digits, ._+=- and /, no '..'), got {_show(x)}")
        return s

    def boolean(self, x: Any, field: str) -> bool:
        if not isinstance(x, bool):
            self.fail(field, f"expected true or false, got {_show(x)}")
        return x

    def integer(self, x: Any, field: str, *, low: int | None = None) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or (low is not None and x < low):
            self.fail(field, f"expected an integer{'' if low is None else f' >= {low}'}, got {_show(x)}")
        return x

    def number(self, x: Any, field: str) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            self.fail(field, f"expected a finite number, got {_show(x)}")
        return float(x)

    def metric(self, name: Any, field: str, *, alias_ok: bool = False) -> None:
        """A known metric: its canonical name (a task's own list may use another spelling, ``alias_ok``)."""
        from lesionbench.benchmark.scoring.metrics import canonical_metric

        self.text(name, field)
        try:
            known = canonical_metric(name) == name or alias_ok
        except LesionbenchError:
            known = False
        if not known:
            self.fail(field, f"unknown metric {_show(name)} (results use the scorer's canonical metric names)")

    def metric_value(self, mv: Any, field: str) -> None:
        self.obj(mv, field)
        vals: dict[str, float] = {}
        for k in ("value", "ci_low", "ci_high"):
            x = mv.get(k)
            if x is None or (isinstance(x, float) and math.isnan(x)):
                continue  # undefined (a class missing) or no interval (--n-boot 0)
            v = self.number(x, f"{field}.{k}")
            if not 0 <= v <= 1:
                self.fail(f"{field}.{k}", f"expected a value in [0, 1] (every reported metric is), got {_show(x)}")
            vals[k] = v
        if "value" not in mv:
            self.fail(f"{field}.value", "missing")
        if ("ci_low" in vals) != ("ci_high" in vals) or vals.get("ci_low", 0) > vals.get("ci_high", 1):
            self.fail(field, f"CI bounds missing one side or not ordered: [{_show(mv.get('ci_low'))}, {_show(mv.get('ci_high'))}]")

    def created(self, x: Any, field: str) -> None:
        s = self.text(x, field)
        try:
            when = datetime.fromisoformat(s)
        except ValueError:
            self.fail(field, f"expected an ISO 8601 date and time, got {_show(x)}")
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        if when > datetime.now(timezone.utc) + _CLOCK_SKEW:
            self.fail(field, f"dated in the future ({s})")

