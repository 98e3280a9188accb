"""The challenge configuration: how many submissions a team may make and how many count at the end.

Kaggle-like defaults, overridable by a JSON or TOML file that the organiser keeps in the organiser
folder (``challenge.toml`` or ``challenge.json``) or passes with ``--challenge FILE``::

    # challenge.toml
    per_day = 5          # scored submissions per team per UTC day (Kaggle: 5)
    total = 100          # scored submissions per team over the whole challenge
    max_selected = 2     # submissions a team may select for the final, private ranking (Kaggle: 2)
    deadline = 2026-12-31T23:59:00Z   # optional: no submission and no change of selection from then on

    [tasks.luna16_malignancy]   # optional per-task overrides of the same keys
    per_day = 2

Quotas count per team and task version, from the organiser store only (never from a file the
submitter controls). A day is a UTC calendar day, as on Kaggle: the count resets at 00:00 UTC.
Quotas slow down probing the public labels through the public score; they do not stop it, which is
why the final ranking is on the private part.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lesionbench.benchmark.errors import ConfigurationError, did_you_mean

logger = logging.getLogger(__name__)

#: Kaggle's default daily limit.
DEFAULT_PER_DAY = 5
DEFAULT_TOTAL = 100
#: Kaggle's default number of final submissions.
DEFAULT_MAX_SELECTED = 2
#: Names the organiser folder's configuration file may have, in the order they are looked for.
CONFIG_NAMES = ("challenge.toml", "challenge.json")
_LIMITS = ("per_day", "total", "max_selected", "deadline")
#: Largest accepted configuration file: it is a handful of numbers.
_MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Quotas of one task: submissions per team per UTC day and in total, and final selections."""

    per_day: int = DEFAULT_PER_DAY
    total: int = DEFAULT_TOTAL
    max_selected: int = DEFAULT_MAX_SELECTED
    deadline: datetime | None = None  # UTC; None: open


@dataclass(frozen=True)
class ChallengeConfig:
    """Default limits plus per-task overrides; ``source`` names the file they came from."""

    limits: Limits = Limits()
    tasks: Mapping[str, Limits] = field(default_factory=dict)
    source: str = "built-in defaults"

    def for_task(self, task: str) -> Limits:
        return self.tasks.get(task, self.limits)


def utc_now() -> datetime:
    """The clock quotas use (tests inject their own)."""
    return datetime.now(timezone.utc)


def as_utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive datetime is taken to be UTC already."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _limits(table: Mapping[str, Any], base: Limits, where: str, source: str) -> Limits:
    values = {}
    for key, value in table.items():
        if key not in _LIMITS:
            raise ConfigurationError(
                f"Challenge configuration {source}: unknown key {where}{key!r}.{did_you_mean(key, _LIMITS)} Known keys: {', '.join(_LIMITS)}."
            )
        if key == "deadline":
            values[key] = _deadline(value, f"{where}{key}", source)
            continue
        # bool is an int in Python; `per_day = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"Challenge configuration {source}: {where}{key} must be a whole number of at least 1, got {value!r}.")
        values[key] = value
    limits = replace(base, **values)
    if limits.per_day > limits.total:
        logger.warning("Challenge configuration %s: %sper_day (%d) is more than total (%d); total is the binding limit.", source, where, limits.per_day, limits.total)
    return limits


def _deadline(value: Any, key: str, source: str) -> datetime:
    """A TOML offset date-time or an ISO 8601 string, with a time zone (a deadline must be one instant)."""
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            when = None
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ConfigurationError(f"Challenge configuration {source}: {key} must be a date and time with a time zone, e.g. 2026-12-31T23:59:00Z, got {value!r}.")
    return when.astimezone(timezone.utc)


def parse_challenge(data: Mapping[str, Any], *, source: str = "<mapping>") -> ChallengeConfig:
    """A validated :class:`ChallengeConfig` from a parsed file (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"Challenge configuration {source}: expected a table of keys (per_day, total, max_selected, tasks), got {type(data).__name__}.")
    top = {k: v for k, v in data.items() if k != "tasks"}
    limits = _limits(top, Limits(), "", source)
    tasks_table = data.get("tasks", {})
    if not isinstance(tasks_table, Mapping):
        raise ConfigurationError(f"Challenge configuration {source}: 'tasks' must be a table of task name -> limits, got {type(tasks_table).__name__}.")
    tasks = {}
    for name, table in tasks_table.items():
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"Challenge configuration {source}: tasks.{name} must be a table of limits, got {type(table).__name__}.")
        tasks[str(name)] = _limits(table, limits, f"tasks.{name}.", source)
    return ChallengeConfig(limits=limits, tasks=tasks, source=source)


def load_challenge(path: str | Path) -> ChallengeConfig:
    """Read and validate a ``.toml`` or ``.json`` challenge configuration file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"Challenge configuration {path} does not exist (or is not a file). Give a .toml or .json file, or leave --challenge out for the defaults.")
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ConfigurationError(f"Challenge configuration {path} is larger than 1 MiB; it holds a few numbers.")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigurationError(f"Challenge configuration {path}: unknown format {suffix!r}; name it *.toml or *.json.")
    except ImportError as exc:  # tomllib is Python 3.11+
        raise ConfigurationError(f"Challenge configuration {path}: TOML needs Python 3.11 or later; write it as JSON instead.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"Challenge configuration {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"Challenge configuration {path} could not be parsed as {suffix[1:].upper()}: {exc}.") from exc
    return parse_challenge(data, source=str(path))


def resolve_challenge(challenge: ChallengeConfig | str | Path | None, organiser_dir: Path) -> ChallengeConfig:
    """``challenge`` itself, the file it names, else the organiser folder's configuration file, else the defaults."""
    if isinstance(challenge, ChallengeConfig):
        return challenge
    if challenge is not None:
        return load_challenge(challenge)
    for name in CONFIG_NAMES:
        if (organiser_dir / name).is_file():
            return load_challenge(organiser_dir / name)
    return ChallengeConfig()
