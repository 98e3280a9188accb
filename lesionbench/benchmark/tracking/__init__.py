"""Tracking: MLflow as a sink for finished results (:mod:`.mlflow_sink`) and the figures logged with them
(:mod:`.plots`). Logging is a separate step after scoring; a failed logging call warns and keeps the result.

A new sink (another experiment tracker) goes here."""

from lesionbench.benchmark.tracking.mlflow_sink import DEFAULT_EXPERIMENT, LEVEL_TAG, absolute_sqlite_uri, artifact_location, log_result, redact_uri, resolve_tracking_uri

__all__ = ["DEFAULT_EXPERIMENT", "LEVEL_TAG", "absolute_sqlite_uri", "artifact_location", "log_result", "redact_uri", "resolve_tracking_uri"]
