"""The request bodies and path parameters of the challenge server's API (validated by pydantic: a bad value
is a 422 naming the field, never a 500)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path as PathParam
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Ids in paths: positive and within a 32-bit integer (larger ones cannot exist and would overflow SQLite).
Id = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
Slug = Annotated[str, PathParam(max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")]
#: No NUL characters: PostgreSQL cannot store them in text.
NO_NUL = r"^[^\x00]*$"


class SignUp(BaseModel):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$")
    password: str = Field(min_length=10, max_length=1024)
    display_name: str = Field(min_length=1, max_length=64, pattern=NO_NUL)


class SignIn(BaseModel):
    email: str = Field(max_length=254, pattern=NO_NUL)
    password: str = Field(max_length=1024)


class TokenRequest(BaseModel):
    name: str = Field(default="", max_length=64, pattern=NO_NUL)
    scopes: list[Literal["read", "submit", "admin"]] = Field(min_length=1, max_length=3)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class ChallengeRequest(BaseModel):
    slug: str = Field(max_length=63)
    title: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    description: str = Field(default="", max_length=5000, pattern=NO_NUL)
    team_signup: Literal["open", "invitation"] = "open"
    n_boot: int = Field(default=1000, ge=0, le=10000)


class PhaseRequest(BaseModel):
    name: str = Field(max_length=64)
    kind: Literal["sanity", "public", "final"]
    task: str = Field(max_length=64, pattern=NO_NUL)
    quota_per_window: int = Field(default=5, ge=1, le=10000)
    quota_window_hours: int = Field(default=24, ge=1, le=24 * 366)
    quota_total: int = Field(default=100, ge=0, le=100000)
    max_concurrent: int = Field(default=2, ge=1, le=1000)
    final_selection_n: int = Field(default=2, ge=1, le=100)
    allow_embeddings: bool = True
    opens_at: AwareDatetime | None = Field(default=None, description="UTC (or any zone given explicitly); submissions before it are refused")
    closes_at: AwareDatetime | None = Field(default=None, description="the deadline, with its time zone, e.g. 2027-03-01T23:59:00Z")


class TeamRequest(BaseModel):
    name: str = Field(max_length=64)


class JoinRequest(BaseModel):
    code: str = Field(min_length=1, max_length=128)


class Selection(BaseModel):
    submission_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(max_length=100)




class ModelCard(BaseModel):
    """What a team says about the model behind a submission (all but ``model`` optional), shown on the
    submission's page: the fields the leaderboard's model table uses for the harness's own encoders.
    ``pretraining_sets``: None = not declared, [] = pre-trained on no public dataset. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    parameters: int | None = Field(default=None, ge=0, le=10**13)
    embedding_dim: int | None = Field(default=None, ge=1, le=10**6)
    licence: str = Field(default="", max_length=64, pattern=NO_NUL)
    pretraining_sets: list[Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]] | None = Field(default=None, max_length=30)
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    url: str | None = Field(default=None, max_length=300, pattern=r"^https?://[^\s\x00<>\"'`]+$", description="paper, code or weights (http or https)")
