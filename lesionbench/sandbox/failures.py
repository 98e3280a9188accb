"""Failure classes of a code submission, as Kaggle names them, and the outcome of one sandboxed run.

A participant sees the class (and, for a bad output, which check failed); the log tail only in the sanity
phase. Infrastructure failures (the engine is missing, the image does not load, the organiser's disk is full)
are the organiser's problem and never count against a team's quota.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lesionbench.benchmark.errors import LesionbenchError


class FailureClass(StrEnum):
    """Why a submission produced no scores."""

    TIMED_OUT = "timed out"
    OUT_OF_MEMORY = "out of memory"
    CRASHED = "crashed"
    BAD_OUTPUT = "bad output"
    INFRASTRUCTURE = "infrastructure"


class Phase(StrEnum):
    """A challenge phase: the sanity phase runs on a small public cohort and shows logs; the final does not."""

    SANITY = "sanity"
    FINAL = "final"


@dataclass(frozen=True)
class Outcome:
    """What a sandboxed run came to: ``failure`` is ``None`` when the outputs passed every check.

    ``detail``: the exit code for a crash, the failed check's name for a bad output, the limit for a time-out
    or out-of-memory kill; ``log_tail`` the last bytes the submission printed (never shown in the final phase);
    ``log_lines`` how many lines it printed in all.
    """

    failure: FailureClass | None
    detail: str = ""
    exit_code: int | None = None
    wall_s: float = 0.0
    log_tail: str = ""
    log_lines: int = 0

    @property
    def ok(self) -> bool:
        """Whether the run passed."""
        return self.failure is None

    @property
    def counts_against_quota(self) -> bool:
        """Every finished or failed submission counts, except where the organiser's side failed."""
        return self.failure is not FailureClass.INFRASTRUCTURE

    def for_participant(self, phase: Phase | str = Phase.FINAL) -> dict[str, object]:
        """What a participant may see: the class and its detail; the log tail only in the sanity phase."""
        out: dict[str, object] = {"status": "ok" if self.ok else str(self.failure), "detail": self.detail}
        if Phase(phase) is Phase.SANITY:
            out["log_tail"] = self.log_tail
        return out


class SubmissionFailed(LesionbenchError, RuntimeError):
    """A submission that failed in its sandbox; ``outcome`` says how (its class is the first word of the message)."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        super().__init__(f"submission failed: {outcome.failure} ({outcome.detail}); exit code {outcome.exit_code}, {outcome.wall_s:.1f} s")


class BadOutputError(LesionbenchError, ValueError):
    """Outputs that break the contract; ``check`` names the check that failed."""

    def __init__(self, check: str, message: str):
        self.check = check
        super().__init__(f"{check}: {message}")


class InfrastructureError(LesionbenchError, RuntimeError):
    """The organiser's side failed (engine missing, image unloadable, out of disk): never the team's fault."""
