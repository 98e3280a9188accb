"""One exception hierarchy for everything lesionbench reports to a user.

Every error derives from :class:`LesionbenchError` and from the builtin that fits, so callers can
catch either. Messages say what failed, what was given, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


class LesionbenchError(Exception):
    """Base class of every error lesionbench raises on purpose."""


class UnknownNameError(LesionbenchError, KeyError):
    """A task, encoder or probe name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ManifestError(LesionbenchError, ValueError):
    """A lesion manifest with one or more problems; ``problems`` lists every one of them."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} found:\n{lines}")


class ImageError(LesionbenchError, ValueError):
    """An image that is missing, unreadable or does not contain a requested seed point."""


class WeightsError(LesionbenchError, ValueError):
    """A weights file that is missing, corrupt, of the wrong format or of the wrong model."""


class SplitError(LesionbenchError, ValueError):
    """A limited-label subset that cannot be drawn, or splits that leak patients."""


class DataPreparationError(LesionbenchError, ValueError):
    """Raw public data that is missing or malformed when a task is prepared."""


class SubmissionError(LesionbenchError, ValueError):
    """An untrusted submission file with one or more problems; ``problems`` lists every one of them."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: submission rejected, {len(self.problems)} problem(s):\n{lines}")


class ConfigurationError(LesionbenchError, ValueError):
    """Inconsistent options given to a command or function."""


def did_you_mean(name: str, choices: Iterable[str], *, cutoff: float = 0.6, aliases: Mapping[str, str] | None = None) -> str:
    """``" Did you mean 'x'?"`` for the choice closest to ``name`` (difflib), or ``""`` when none is close.
    ``aliases`` maps a matched alternative spelling to the name to suggest."""
    import difflib

    # case-insensitive: RADIOMICS and Synthetic_Site are typos of the same kind as radiomic
    folded = {str(c).casefold(): str(c) for c in choices}
    want = str(name).casefold()
    close = [folded[want]] if want in folded else [folded[c] for c in difflib.get_close_matches(want, list(folded), n=1, cutoff=cutoff)]
    if not close:
        return ""
    return f" Did you mean {(aliases or {}).get(close[0], close[0])!r}?"
