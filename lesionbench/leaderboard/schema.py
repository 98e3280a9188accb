"""JSON Schema (draft 2020-12) of ``leaderboard.json``; written beside it as ``leaderboard.schema.json``."""

from __future__ import annotations

from typing import Any

_NUM = {"type": ["number", "null"]}
_STR = {"type": "string"}
_OPT_STR = {"type": ["string", "null"]}

_CI = {
    "type": "object",
    "required": ["value", "ci_low", "ci_high"],
    "properties": {"value": _NUM, "ci_low": _NUM, "ci_high": _NUM},
}
_MEASURED_METRIC = {
    "type": "object",
    "required": ["value", "ci_low", "ci_high", "mean", "sd", "n_seeds"],
    "properties": {
        "value": _NUM,
        "ci_low": _NUM,
        "ci_high": _NUM,
        "mean": _NUM,
        "sd": _NUM,
        "n_seeds": {"type": "integer", "minimum": 0},
        # k-shot sections: value and CI are the seeds' mean and its interval with the draw variance
        "value_seed": {**_NUM, "description": "k-shot: the lowest seed's own value"},
        "interval": {"enum": ["seed mean"]},
    },
    "additionalProperties": False,
}
_CURVE_POINT = {
    "type": "object",
    "required": ["fraction", "mean", "sd", "min", "max", "n_seeds", "n_train"],
    "properties": {
        "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "mean": {"type": "number"},
        "sd": {"type": "number", "minimum": 0},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "n_seeds": {"type": "integer", "minimum": 1},
        "n_train": {"type": "integer", "minimum": 0},
        "shots": {"type": "integer", "minimum": 1, "description": "k-shot sections: the k of this point (fraction: its share of the training split)"},
    },
    "additionalProperties": False,
}
_PROVENANCE = {
    "type": "object",
    "required": [
        "encoder", "encoder_version", "weights_sha256", "encoder_fingerprint", "probe", "task_version",
        "split_variant", "split_hash", "lesionbench_version", "created", "source", "location",
    ],
    "properties": {
        "encoder": _STR,
        "encoder_version": _STR,
        "weights_sha256": _OPT_STR,
        "encoder_fingerprint": _STR,
        "probe": _STR,
        "task_version": _STR,
        "split_variant": _STR,
        "split_hash": _OPT_STR,
        "lesionbench_version": _STR,
        "created": _STR,
        "source": {"enum": ["local", "mlflow"]},
        "location": _STR,
        "leaked_patients": {"type": "integer", "minimum": 0},
        "n_runs": {"type": "integer", "minimum": 0},
        "encoder_identity": {"type": "string", "description": "digest of the encoder's name, version, weights and recipe"},
        "bootstrap_unit": {"enum": ["patient", "lesion"]},
        "n_boot": {"type": ["integer", "null"], "minimum": 0},
        "validation": {"enum": ["fraction", "full", None], "description": "validation split subsampled like the labels, or all of it"},
    },
}
_COMPARISON = {
    "type": ["object", "null"],
    "required": ["metric"],
    "properties": {
        "versus": _OPT_STR,
        "versus_probe": _STR,
        "metric": _STR,
        "difference": {"type": ["number", "null"], "description": "this entry minus the top entry (negative = worse)"},
        "ci_low": _NUM,
        "ci_high": _NUM,
        "p_value": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "p_holm": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "Holm over all pairs of entries"},
        "p_maxt": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "step-down max-T over all pairs (null: not run)"},
        "p_adjusted": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "the section's correction's p (statistics.correction); decides significant"},
        "significant": {"type": "boolean"},
        "is_reference": {"type": "boolean"},
        "n_lesions": {"type": "integer", "minimum": 0},
    },
}
_ENTRY = {
    "type": "object",
    "required": ["encoder", "label", "probe", "fraction", "seed", "metrics", "curves", "rank", "rank_interval", "comparison", "unranked_reason", "provenance"],
    "properties": {
        "encoder": _STR,
        "label": {"type": "string", "description": "the entry's name on the page, unique within the task"},
        "probe": _STR,
        "description": _STR,
        "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "shots": {"type": ["integer", "null"], "minimum": 1, "description": "k of the entry's run in k-shot sections"},
        "seed": {"type": "integer"},
        "n_train": {"type": "integer"},
        "head_metrics": {"type": ["object", "null"], "additionalProperties": _CI, "description": "a fine-tuned network's own head on the test split"},
        "metrics": {"type": "object", "additionalProperties": _MEASURED_METRIC},
        "curves": {"type": "object", "additionalProperties": {"type": "array", "items": _CURVE_POINT}},
        "rank": {"type": "integer", "minimum": 1},
        "rank_interval": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
        "comparison": _COMPARISON,
        "unranked_reason": {"type": "null"},
        "provenance": _PROVENANCE,
    },
}
#: An entry listed beside the ranking: measured with fewer labels than the headline, or without intervals.
_UNRANKED = {
    **_ENTRY,
    "properties": {**_ENTRY["properties"], "rank": {"type": "null"}, "rank_interval": {"type": "null"}, "comparison": {"type": "null"}, "unranked_reason": {"type": "string", "minLength": 1}},
}
_SUBMISSION = {
    "type": "object",
    "required": ["name", "kind", "submitted", "n_public", "public", "private", "rank", "provenance"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "kind": {"enum": ["predictions", "features"]},
        "submitted": _STR,
        "n_public": {"type": "integer", "minimum": 0},
        "public": {"type": "object", "additionalProperties": _CI},
        # Null unless the organiser built the page with --reveal.
        "private": {"type": ["object", "null"], "additionalProperties": _CI},
        "n_private": {"type": ["integer", "null"]},
        "file_sha256": _OPT_STR,
        "rank": {"type": "integer", "minimum": 1},
        "private_rank": {"type": ["integer", "null"]},
        # --reveal only: other teams' submissions with the same file or predictions (a copy), for the organiser to judge
        "same_file_as": {"type": ["array", "null"], "items": {"type": "string"}},
        "provenance": _PROVENANCE,
    },
}
_REFERENCE = {
    "type": "object",
    "required": ["task", "approach", "fraction", "source", "metrics"],
    "properties": {
        "task": _STR,
        "approach": _STR,
        "fraction": {"type": "number"},
        "source": _STR,
        "citation": _STR,
        "note": _STR,
        "protocol": {"type": "string", "description": "the protocol key the row was measured with; shown only in sections of that protocol"},
        "metrics": {"type": "object", "additionalProperties": _CI},
    },
}

LEADERBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://lesionbench.invalid/schemas/leaderboard-1.json",
    "title": "lesionbench leaderboard",
    "description": "Measured entries ranked per task, submissions, and published reference rows (never ranked).",
    "type": "object",
    "required": ["schema", "generated", "lesionbench_version", "reveal", "tasks", "reference_only"],
    "properties": {
        "schema": {"const": "lesionbench.leaderboard/1"},
        "generated": _STR,
        "lesionbench_version": _STR,
        "reveal": {"type": "boolean"},
        "published_source": {"type": "object"},
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "version", "kind", "main_metric", "metrics", "fraction", "entries", "unranked", "submissions", "reference", "statistics"],
                "properties": {
                    "name": _STR,
                    "version": _STR,
                    "kind": {"enum": ["multiclass", "binary", "survival"]},
                    "description": _STR,
                    "main_metric": _STR,
                    "metrics": {"type": "array", "items": _STR},
                    "class_names": {"type": "array", "items": _STR},
                    "citation": _STR,
                    "published_split": {"type": "boolean"},
                    "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "the headline training fraction entries are ranked at"},
                    "protocol": {"type": "string", "description": "the evaluation protocol key (linear, knn, k-shot-linear, finetune-knn ...)"},
                    "shots": {"type": ["integer", "null"], "minimum": 1, "description": "k-shot sections: the k entries are ranked at"},
                    "shots_per": {"enum": ["class", "total", None]},
                    "reference_elsewhere": {"type": "array", "items": _STR, "description": "protocol keys of this task's published rows shown in other sections"},
                    "entries": {"type": "array", "items": _ENTRY},
                    "unranked": {"type": "array", "items": _UNRANKED},
                    "submissions": {"type": "array", "items": _SUBMISSION},
                    "reference": {"type": "array", "items": _REFERENCE},
                    "statistics": {"type": "object"},
                },
            },
        },
        "aggregate": {
            "type": ["object", "null"],
            "description": "one ranking across tasks per protocol with sections for two or more tasks (lesionbench.leaderboard.aggregate); null when none has",
            "required": ["protocols", "task_names", "encoders", "statistics"],
            "properties": {
                "protocols": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["protocol", "tasks", "tables"], "properties": {
                    "protocol": _STR, "tasks": {"type": "array"}, "encoders": {"type": "array", "items": _STR},
                    "tables": {"type": "array", "items": {"type": "object", "required": ["name", "tasks", "rows", "tests", "excluded_tasks"]}}}}},
                "task_names": {"type": "array", "items": _STR}, "encoders": {"type": "array"}, "statistics": {"type": "object"},
            },  # fmt: skip
        },
        "reference_only": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "reference"],
                "properties": {"name": _STR, "reference": {"type": "array", "items": _REFERENCE}},
            },
        },
    },
}


# ------------------------------------------------------------------------------ result.json
def _metric_names() -> list[str]:
    from lesionbench.benchmark.scoring.metrics import ALIASES, DEFAULT_METRICS

    return sorted(set(ALIASES.values()) | {m for ms in DEFAULT_METRICS.values() for m in ms})


_NAME = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000-\\u001f]*$"}
#: A path a result names (empty, or relative: components that do not start with a dot, so no "..").
_RELATIVE_PATH = "^([A-Za-z0-9_+=-][A-Za-z0-9._+=-]*(/[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*)*)?$"
_UNIT = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_RESULT_METRIC = {"type": "object", "required": ["value"], "properties": {"value": _UNIT, "ci_low": _UNIT, "ci_high": _UNIT}}
_METRIC_MAP = {"type": "object", "propertyNames": {"enum": _metric_names()}, "additionalProperties": _RESULT_METRIC}
_RUN = {
    "type": "object",
    "required": ["fraction", "seed", "n_train", "metrics"],
    "properties": {
        "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": "integer"},
        "n_train": {"type": "integer", "minimum": 0},
        "shots": {"type": ["integer", "null"], "minimum": 1, "description": "k of a k-shot run (fraction is then its share of the training split)"},
        "metrics": {**_METRIC_MAP, "minProperties": 1},
        "params": {"type": "object"},
        # relative to the result's own folder or run, never out of it (no leading "/", no "..")
        "predictions_path": {"type": "string", "pattern": _RELATIVE_PATH},
        "subset_path": {"type": "string", "pattern": _RELATIVE_PATH},
    },
}

#: The format of ``result.json`` as ``lesionbench run`` and ``submit`` write it, and as the leaderboard
#: accepts it (:mod:`lesionbench.leaderboard.validate` enforces it, plus what a JSON Schema cannot say:
#: ordered CI bounds, a creation date that is not in the future, one run per (fraction, seed), integer seeds).
RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://lesionbench.invalid/schemas/task-result-1.json",
    "title": "lesionbench result (result.json)",
    "type": "object",
    "required": ["schema", "task", "encoder", "probe", "runs", "lesionbench_version", "created"],
    "properties": {
        "schema": {"const": "lesionbench.task_result/1"},
        "task": {
            "type": "object",
            "required": ["name", "version", "kind"],
            "properties": {
                "name": _NAME,
                "version": _NAME,
                "kind": {"enum": ["multiclass", "binary", "survival"]},
                "main_metric": _STR,
                "metrics": {"type": "array", "items": _STR},
                "class_names": {"type": "array", "items": _STR},
                "published_split": {"type": "boolean"},
            },
        },
        "encoder": {
            "type": "object",
            "required": ["name", "version", "feature_dim"],
            "properties": {
                "name": _NAME,
                "version": _NAME,
                "feature_dim": {"type": "integer", "minimum": 0},
                "weights_sha256": {"type": "string", "maxLength": 200, "description": "the weights file's sha256, or a label of generated weights"},
                "patch": {"type": "object"},
                "settings": {"type": "array", "items": {"type": "array", "items": _STR, "minItems": 2, "maxItems": 2}},
            },
        },
        "probe": _NAME,
        "runs": {"type": "array", "minItems": 1, "items": _RUN},
        "lesionbench_version": _NAME,
        "created": {"type": "string", "format": "date-time"},
        "split_hash": _STR,
        "leaked_patients": {"type": "array", "items": _STR},
        "extra": {
            "type": "object",
            "properties": {
                "n_boot": {"type": "integer", "minimum": 0},
                "bootstrap_unit": {"enum": ["patient", "lesion"]},
                "validation": {"enum": ["fraction", "full"]},
                "submission": {
                    "type": "object",
                    "required": ["name", "kind", "file_sha256", "n_public"],
                    "properties": {
                        "name": {**_NAME, "maxLength": 64},
                        "kind": {"enum": ["predictions", "features"]},
                        "file_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "n_public": {"type": "integer", "minimum": 0},
                        "public": _METRIC_MAP,
                        "private": {"anyOf": [_METRIC_MAP, {"type": "null"}]},
                    },
                },
            },
        },
    },
    # provenance: a submission says what was submitted; a run says its split and how its intervals were drawn
    "anyOf": [
        {"required": ["extra"], "properties": {"extra": {"required": ["submission"]}}},
        {"required": ["split_hash", "extra"], "properties": {"split_hash": {"minLength": 1}, "extra": {"required": ["n_boot", "bootstrap_unit"]}}},
    ],
}


# ------------------------------------------------------------------------- robustness (leaderboard.json)
_ICC = {"type": ["number", "null"], "minimum": -1, "maximum": 1}
_SHARE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_INTERVAL = {"type": ["object", "null"], "required": ["value", "ci_low", "ci_high"], "properties": {"value": _NUM, "ci_low": _NUM, "ci_high": _NUM}}
_BOX = {"type": ["object", "null"], "required": ["whislo", "q1", "med", "q3", "whishi", "n"],
        "properties": {**{k: _ICC for k in ("whislo", "q1", "med", "q3", "whishi")}, "n": {"type": "integer", "minimum": 1}}}  # fmt: skip
_ROBUSTNESS_ROW = {
    "type": "object",
    "required": ["encoder", "perturbation", "icc_median", "icc_median_ci", "icc_q25", "icc_q75", "icc_share_good", "icc_undefined", "n_features",
                 "cosine", "prediction_change", "metric_drop", "box"],  # fmt: skip
    "properties": {
        "encoder": _STR,
        "perturbation": _STR,
        "icc_median": _ICC,
        "icc_median_ci": {"type": "array", "items": _ICC, "minItems": 2, "maxItems": 2},
        "icc_q25": _ICC,
        "icc_q75": _ICC,
        "icc_share_good": {**_SHARE, "description": "share of the defined features with ICC(2,1) (absolute agreement) >= 0.75"},
        "icc_consistency_median": {**_ICC, "description": "median per-feature ICC(3,1) (consistency), beside the headline ICC(2,1)"},
        "icc_undefined": {"type": "integer", "minimum": 0, "description": "features without variance: ICC undefined"},
        "n_features": {"type": "integer", "minimum": 0},
        "cosine": _INTERVAL,
        "prediction_change": {**_INTERVAL, "description": "share of test predictions that change class; null: not measured (retest pairs outside the test split)"},
        "metric_drop": {**_INTERVAL, "description": "main metric unperturbed minus perturbed (positive = worse)"},
        "n_pairs": {"type": ["integer", "null"], "minimum": 0},
        "note": _OPT_STR,
        "box": {**_BOX, "description": "Tukey box statistics of the defined per-feature ICCs (the plot's)"},
    },
}
#: ``doc["robustness"]``: per task version, the robustness of each encoder (``lesionbench robustness``); never ranked.
ROBUSTNESS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "version", "kind", "main_metric", "encoders", "rows"],
        "properties": {
            "name": _STR,
            "version": _STR,
            "kind": {"enum": ["multiclass", "binary", "survival"]},
            "main_metric": _STR,
            "encoders": {"type": "array", "items": {"type": "object", "required": ["encoder", "reference", "n_test", "n_test_patients", "bootstrap_unit", "n_boot", "settings", "notes"]}},
            "rows": {"type": "array", "items": _ROBUSTNESS_ROW},
        },
    },
}
LEADERBOARD_SCHEMA["properties"]["robustness"] = ROBUSTNESS_SCHEMA
