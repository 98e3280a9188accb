"""The leaderboard's robustness section: read ``robustness.json`` files, check them, shape them for the page.

``lesionbench robustness`` writes ``<results>/<task>/<task version>/<encoder>/robustness.json``
(:mod:`lesionbench.benchmark.robustness.evaluate`) and logs it as the artifact of an MLflow run tagged
``lesionbench.protocol = robustness``. The page shows them per task version, one row per (encoder,
perturbation), in their own table and box plot: robustness is another question than the ranking, so its
rows are never mixed with the ranked entries.

A robustness file comes from as many hands as a ``result.json``, so it is read as untrusted input: every
field the page uses is checked for type and range (:func:`check_robustness`); a malformed or foreign file
is skipped with one warning naming the file and the field. NaN (an undefined ICC or metric) becomes null.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lesionbench.leaderboard.validate import ResultFileError, _Checker, _show

logger = logging.getLogger(__name__)

FILENAME = "robustness.json"
SCHEMA_VERSION = 1
PROTOCOL_TAG = "lesionbench.protocol"
#: Larger than any real robustness file (4096 features x 5 perturbations of per-feature ICCs is ~0.5 MB).
MAX_BYTES = 32 * 2**20
MAX_NOTE = 4000
_ORDER = ("shift", "rotate", "spacing", "noise", "retest")
_UNITS = ("patient", "lesion")
_KINDS = ("binary", "multiclass", "survival")


class RobustnessFileError(ResultFileError):
    """A ``robustness.json`` that is not one ``lesionbench robustness`` writes (``source``, ``field``: where)."""

    def __init__(self, source: str, field: str, problem: str):
        super().__init__(source, field, problem)
        self.args = (f"{source}: not a valid robustness result: {field}: {problem}",)


class _RobustChecker(_Checker):
    def fail(self, field: str, problem: str) -> None:
        raise RobustnessFileError(self.source, field, problem)

    def value(self, x: Any, field: str, low: float, high: float) -> float | None:
        """A number in [low, high], or None for null / NaN (undefined)."""
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return None
        v = self.number(x, field)
        if not low <= v <= high:
            self.fail(field, f"expected a value in [{low:g}, {high:g}], got {_show(x)}")
        return v

    def note(self, x: Any, field: str) -> str:
        """Free text (a note may quote an error message, line breaks and all): any string, shown as text."""
        if len(self.text(x, field)) > MAX_NOTE:
            self.fail(field, f"{len(x)} characters, more than the {MAX_NOTE} a note can have")
        return x

    def interval(self, x: Any, field: str, low: float, high: float, *, optional: bool = False) -> dict[str, float | None] | None:
        if x is None and optional:
            return None
        self.obj(x, field)
        out = {k: self.value(x.get(k), f"{field}.{k}", low, high) for k in ("value", "ci_low", "ci_high")}
        if "value" not in x:
            self.fail(f"{field}.value", "missing")
        lo, hi = out["ci_low"], out["ci_high"]
        if (lo is None) != (hi is None) or (lo is not None and hi is not None and lo > hi):
            self.fail(field, f"CI bounds missing one side or not ordered: [{_show(x.get('ci_low'))}, {_show(x.get('ci_high'))}]")
        return out


def check_robustness(doc: Any, source: str) -> dict[str, Any]:
    """The page's view of one robustness document: checked, NaN as null; raises :class:`RobustnessFileError`."""
    c = _RobustChecker(source)
    c.obj(doc, "robustness")
    if doc.get("protocol") != "robustness" or doc.get("schema_version") != SCHEMA_VERSION:
        c.fail("protocol", f"expected protocol 'robustness' and schema_version {SCHEMA_VERSION}, got {_show(doc.get('protocol'))} / {_show(doc.get('schema_version'))}")
    task = c.obj(doc.get("task"), "task")
    enc = c.obj(doc.get("encoder"), "encoder")
    for where, d in (("task", task), ("encoder", enc)):
        for k in ("name", "version"):
            c.name(d.get(k), f"{where}.{k}")
    if task.get("kind") not in _KINDS:
        c.fail("task.kind", f"expected one of {', '.join(_KINDS)}, got {_show(task.get('kind'))}")
    c.metric(task.get("main_metric"), "task.main_metric", alias_ok=False)
    c.integer(enc.get("feature_dim"), "encoder.feature_dim", low=0)
    c.boolean(enc.get("trainable", False), "encoder.trainable")
    for k in ("fingerprint", "weights_sha256"):
        if enc.get(k) is not None and c.text(enc[k], f"encoder.{k}"):
            c.name(enc[k], f"encoder.{k}")
    unit = doc.get("bootstrap_unit")
    if unit not in _UNITS:
        c.fail("bootstrap_unit", f"expected one of {', '.join(_UNITS)}, got {_show(unit)}")
    counts = {k: c.integer(doc.get(k), k, low=0) for k in ("n_boot", "n_test", "n_test_patients")}
    notes = [c.note(n, f"notes[{i}]") for i, n in enumerate(c.array(doc.get("notes", []), "notes"))]
    settings = _settings(c, c.obj(doc.get("settings"), "settings"))

    ref = c.obj(doc.get("reference"), "reference")
    if ref.get("main_metric") is not None:
        c.metric(ref["main_metric"], "reference.main_metric")
    reference = {
        "main_metric": ref.get("main_metric") or task["main_metric"],
        "value": c.value(ref.get("value"), "reference.value", 0, 1),
        "value_standard_extraction": c.value(ref.get("value_standard_extraction"), "reference.value_standard_extraction", 0, 1),
        "cosine_crop_vs_standard": c.value(ref.get("cosine_crop_vs_standard"), "reference.cosine_crop_vs_standard", -1, 1),
    }
    blocks = c.obj(doc.get("perturbations"), "perturbations")
    if not blocks:
        c.fail("perturbations", "empty: a robustness result holds at least one perturbation")
    rows = [_block(c, str(k), b, f"perturbations.{k}" if len(str(k)) <= 40 else "perturbations key") for k, b in blocks.items()]
    return {"task": {k: task[k] for k in ("name", "version", "kind", "main_metric")},
            "encoder": {"name": enc["name"], "version": enc["version"], "feature_dim": enc["feature_dim"], "trainable": bool(enc.get("trainable", False))},
            "bootstrap_unit": unit, **counts, "settings": settings, "reference": reference, "notes": notes, "rows": rows}  # fmt: skip


def _settings(c: _RobustChecker, s: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ("shift_mm", "rotate_deg", "spacing_mm"):
        if k in s:
            pair = c.array(s[k], f"settings.{k}")
            if len(pair) != 2:
                c.fail(f"settings.{k}", f"expected a [low, high] pair, got {_show(pair)}")
            lo, hi = (c.number(x, f"settings.{k}") for x in pair)
            if not 0 <= lo <= hi:
                c.fail(f"settings.{k}", f"expected 0 <= low <= high, got {_show(pair)}")
            out[k] = [lo, hi]
    if "noise_hu" in s:
        out["noise_hu"] = c.number(s["noise_hu"], "settings.noise_hu")
        if out["noise_hu"] < 0:
            c.fail("settings.noise_hu", f"expected >= 0 HU, got {_show(s['noise_hu'])}")
    for k in ("repeats", "seed", "subset_seed"):
        if k in s:
            out[k] = c.integer(s[k], f"settings.{k}", low=0)
    for k in ("probe", "validation"):
        if k in s:
            out[k] = c.name(s[k], f"settings.{k}")
    if "fraction" in s:
        out["fraction"] = c.value(s["fraction"], "settings.fraction", 0, 1)
    return out


def _block(c: _RobustChecker, name: str, b: Any, where: str) -> dict[str, Any]:
    c.name(name, "perturbations key", limit=40)
    c.obj(b, where)
    icc = c.obj(b.get("icc"), f"{where}.icc")
    n = {k: c.integer(icc.get(k), f"{where}.icc.{k}", low=0) for k in ("n_features", "n_defined", "n_undefined")}
    if n["n_defined"] + n["n_undefined"] != n["n_features"]:
        c.fail(f"{where}.icc", f"n_defined + n_undefined ({n['n_defined']} + {n['n_undefined']}) is not n_features ({n['n_features']})")
    # ICC(2,1) and ICC(3,1) lie within [-1, 1]
    q = {k: c.value(icc.get(k), f"{where}.icc.{k}", -1, 1) for k in ("p05", "q25", "median", "q75", "p95")}
    shares = {k: c.value(icc.get(k), f"{where}.icc.{k}", 0, 1) for k in ("share_good", "share_excellent")}
    mci = icc.get("median_ci", [None, None])
    if not (isinstance(mci, list) and len(mci) == 2):
        c.fail(f"{where}.icc.median_ci", f"expected a [low, high] pair, got {_show(mci)}")
    mlo, mhi = (c.value(x, f"{where}.icc.median_ci", -1, 1) for x in mci)
    if (mlo is None) != (mhi is None) or (mlo is not None and mhi is not None and mlo > mhi):
        c.fail(f"{where}.icc.median_ci", f"CI bounds missing one side or not ordered: {_show(mci)}")
    per = c.array(b.get("per_feature_icc", []), f"{where}.per_feature_icc")
    if per and len(per) != n["n_features"]:
        c.fail(f"{where}.per_feature_icc", f"{len(per)} values for {n['n_features']} features")
    values = [v for i, x in enumerate(per) if (v := c.value(x, f"{where}.per_feature_icc[{i}]", -1, 1)) is not None]
    row = {
        "perturbation": name,
        "icc_median": q["median"], "icc_median_ci": [mlo, mhi], "icc_q25": q["q25"], "icc_q75": q["q75"],
        "icc_share_good": shares["share_good"], "icc_undefined": n["n_undefined"], "n_features": n["n_features"],
        "cosine": c.interval(b.get("cosine"), f"{where}.cosine", -1, 1),
        "prediction_change": c.interval(b.get("prediction_change"), f"{where}.prediction_change", 0, 1, optional=True),
        "metric_drop": c.interval(b.get("metric_drop"), f"{where}.metric_drop", -1, 1, optional=True),
        "n_pairs": c.integer(b["n_pairs"], f"{where}.n_pairs", low=0) if "n_pairs" in b else None,
        "note": c.note(b["note"], f"{where}.note") if b.get("note") is not None else None,
        "box": _box(values),
        # ICC(3,1) (consistency) beside the headline ICC(2,1) (absolute agreement); null in older files
        "icc_consistency_median": c.value((b.get("icc_consistency") or {}).get("median"), f"{where}.icc_consistency.median", -1, 1),
    }  # fmt: skip
    return row


def _box(values: list[float]) -> dict[str, float] | None:
    """Tukey box of the defined per-feature ICCs (matplotlib's own statistics, outliers left out: a plot, not a list)."""
    if not values:
        return None
    from matplotlib.cbook import boxplot_stats

    (s,) = boxplot_stats(values)
    return {k: float(s[k]) for k in ("whislo", "q1", "med", "q3", "whishi")} | {"n": len(values)}


# --------------------------------------------------------------------------------------- reading
def parse_robustness(raw: bytes, source: str) -> dict[str, Any]:
    if len(raw) > MAX_BYTES:
        raise RobustnessFileError(source, "file", f"{len(raw)} bytes, more than the {MAX_BYTES} a robustness result can have")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RobustnessFileError(source, "file", f"not UTF-8 JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    return check_robustness(doc, source)


def load_local_robustness(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``robustness.json`` below ``results_dir``, checked; a bad one is skipped with one warning."""
    root = Path(results_dir)
    out = []
    for path in sorted(root.rglob(FILENAME)) if root.is_dir() else []:
        try:
            view = parse_robustness(path.read_bytes(), str(path))
        except RobustnessFileError as exc:
            logger.warning("Skipping %s", exc)
            continue
        except OSError as exc:
            logger.warning("Skipping %s: unreadable (%s).", path, exc.strerror or exc)
            continue
        out.append({**view, "source": "local"})
    return out


def load_mlflow_robustness(tracking_uri: str, *, experiments: Sequence[str], cache_dir: str | Path) -> list[dict[str, Any]]:
    """The ``robustness.json`` artifact of every finished run tagged ``lesionbench.protocol = robustness``."""
    from mlflow.tracking import MlflowClient

    from lesionbench.leaderboard.collect import _search_all, _store_error, check_tracking_uri

    uri = check_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        # a missing experiment was already reported by the results' collection: no second warning here
        ids = [e.experiment_id for e in (client.get_experiment_by_name(n) for n in experiments) if e is not None]
        if not ids:
            return []
        runs = _search_all(client, ids, f"tags.`{PROTOCOL_TAG}` = 'robustness' and attributes.status = 'FINISHED'")
    except Exception as exc:  # noqa: BLE001 - an unreachable store is one line, never a traceback
        raise _store_error(uri, exc) from None
    out = []
    for run in runs:
        rid = run.info.run_id
        source = f"MLflow run {rid} ({FILENAME})"
        try:
            dst = Path(cache_dir) / f"robustness-{rid}"
            dst.mkdir(parents=True, exist_ok=True)
            raw = Path(client.download_artifacts(rid, FILENAME, str(dst))).read_bytes()
            view = parse_robustness(raw, source)
        except RobustnessFileError as exc:
            logger.warning("Skipping %s", exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a run without the artifact is skipped, not fatal
            logger.warning("Skipping %s: not readable (%s).", source, type(exc).__name__)
            continue
        out.append({**view, "source": "mlflow", "created": int(run.info.start_time or 0)})
    return out


def collect_robustness(*, tracking_uri: str | None, results_dir: str | Path | None, experiments: Sequence[str] | None, cache_dir: str | Path) -> list[dict[str, Any]]:
    """Robustness results from the results folder and the MLflow experiments; one per (task, version, encoder):
    the local file when both hold one (it is what ``lesionbench robustness`` wrote last), else the newest run."""
    found: list[dict[str, Any]] = []
    if results_dir is not None:
        found += load_local_robustness(results_dir)
    if tracking_uri is not None:
        from lesionbench.benchmark.tracking.mlflow_sink import DEFAULT_EXPERIMENT

        found += sorted(load_mlflow_robustness(tracking_uri, experiments=tuple(experiments or (DEFAULT_EXPERIMENT,)), cache_dir=cache_dir), key=lambda d: -d["created"])
    best: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in found:
        best.setdefault((d["task"]["name"], d["task"]["version"], d["encoder"]["name"]), d)
    return list(best.values())


# -------------------------------------------------------------------------------------- shaping
def robustness_sections(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The document's ``robustness`` list: per task version, its encoders (notes) and one row per (encoder, perturbation)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"]["name"], r["task"]["version"]), []).append(r)
    out = []
    for (name, version), items in sorted(groups.items()):
        items = sorted(items, key=lambda r: r["encoder"]["name"])
        encoders, rows = [], []
        for r in items:
            encoders.append({"encoder": r["encoder"]["name"], "encoder_version": r["encoder"]["version"], "trainable": r["encoder"]["trainable"],
                             "feature_dim": r["encoder"]["feature_dim"], "reference": r["reference"], "n_test": r["n_test"],
                             "n_test_patients": r["n_test_patients"], "bootstrap_unit": r["bootstrap_unit"], "n_boot": r["n_boot"],
                             "settings": r["settings"], "notes": r["notes"], "source": r["source"]})  # fmt: skip
            order = {k: i for i, k in enumerate(_ORDER)}
            for row in sorted(r["rows"], key=lambda x: (order.get(x["perturbation"], len(order)), x["perturbation"])):
                rows.append({"encoder": r["encoder"]["name"], **row})
        first = items[0]["task"]
        out.append({"name": name, "version": version, "kind": first["kind"], "main_metric": first["main_metric"], "encoders": encoders, "rows": rows})
    return out
