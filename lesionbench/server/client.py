"""Talk to a challenge server from Python or the command line (``lesionbench submit --server``,
``lesionbench submissions --server``).

The token comes from the argument, else ``$LESIONBENCH_TOKEN``, else the file ``$LESIONBENCH_TOKEN_FILE``
(default ``~/.config/lesionbench/token``), which should be readable by its owner only. Every refusal is a
:class:`ClientError` carrying the server's one-line reason.

>>> client = ChallengeClient("https://challenge.example.org")          # doctest: +SKIP
>>> sub = client.submit(phase_id=2, path="predictions.csv")            # doctest: +SKIP
>>> client.wait(sub["id"])["public"]["auc"]                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lesionbench.benchmark.errors import ConfigurationError, LesionbenchError

TOKEN_ENV = "LESIONBENCH_TOKEN"
TOKEN_FILE_ENV = "LESIONBENCH_TOKEN_FILE"


class ClientError(LesionbenchError, RuntimeError):
    """The server refused a request (or could not be reached)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def find_token(token: str | None = None) -> str:
    """The API token: ``token``, ``$LESIONBENCH_TOKEN``, or the token file."""
    if token:
        return token.strip()
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = Path(os.environ.get(TOKEN_FILE_ENV) or Path.home() / ".config" / "lesionbench" / "token").expanduser()
    if path.is_file():
        return path.read_text().strip()
    raise ConfigurationError(f"No API token: set {TOKEN_ENV}, or put the token in {path} (create one on the server's account page).")


@dataclass
class ChallengeClient:
    """A client of one server (``url`` without ``/api/v1``)."""

    url: str
    token: str | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(f"Server URL {self.url!r} must start with http:// or https://.")
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}/api/v1", timeout=self.timeout, headers={"Authorization": f"Bearer {find_token(self.token)}"})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"{self.url}: {exc.__class__.__name__}: {exc}; check the URL and that the server runs") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
                detail = body.get("detail")
                if isinstance(detail, list):  # FastAPI's validation errors
                    detail = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg')}" for d in detail)
                problems = body.get("problems")
                if problems and len(problems) > 1:
                    detail = f"{detail}: " + "; ".join(problems)
            except ValueError:
                detail = r.text[:200]
            raise ClientError(f"{method} {path}: {r.status_code} {detail}", status=r.status_code)
        return r.json() if "json" in r.headers.get("content-type", "") else r.text

    def challenge(self, slug: str) -> dict[str, Any]:
        """A challenge and its phases (with the team's quota)."""
        return self._call("GET", f"/challenges/{slug}")

    def submit(self, phase_id: int, path: str | Path, *, kind: str = "predictions", description: str = "", model_card: dict[str, Any] | None = None) -> dict[str, Any]:
        """Upload a predictions (or embeddings) CSV to a phase; returns the queued submission. ``model_card``:
        model (required), parameters, embedding_dim, licence, pretraining_sets, weights_sha256, url."""
        path = Path(path)
        if not path.is_file():
            raise ConfigurationError(f"{path}: no such file; give the predictions CSV to submit.")
        with path.open("rb") as f:
            return self._call("POST", f"/phases/{phase_id}/submissions", files={"file": (path.name, f, "text/csv")}, data={"kind": kind, "description": description, **({"model_card": json.dumps(model_card)} if model_card else {})})

    def submissions(self, phase_id: int) -> list[dict[str, Any]]:
        """The team's submissions in a phase."""
        return self._call("GET", f"/phases/{phase_id}/submissions")

    def submission(self, submission_id: int) -> dict[str, Any]:
        """One submission (status, failure class, scores with CIs)."""
        return self._call("GET", f"/submissions/{submission_id}")

    def wait(self, submission_id: int, *, timeout_s: float = 600.0, poll_s: float = 2.0) -> dict[str, Any]:
        """Poll until the submission is scored or failed (or ``timeout_s`` passes: ClientError)."""
        end = time.monotonic() + timeout_s
        while True:
            sub = self.submission(submission_id)
            if sub["status"] in ("scored", "failed"):
                return sub
            if time.monotonic() > end:
                raise ClientError(f"submission {submission_id} is still {sub['status']} after {timeout_s:.0f} s; check again later with `lesionbench submissions`")
            time.sleep(poll_s)

    def select(self, phase_id: int, ids: list[int]) -> list[int]:
        """Choose the team's final submissions."""
        return self._call("POST", f"/phases/{phase_id}/selection", json={"submission_ids": ids})["selected"]

    def board(self, phase_id: int, *, part: str = "public") -> dict[str, Any]:
        """The board document."""
        return self._call("GET", f"/phases/{phase_id}/board", params={"part": part})

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()


def format_submission(sub: dict[str, Any]) -> str:
    """One line: id, status, failure class, main public score with its CI."""
    score = ""
    pub = sub.get("public") or {}
    if pub:
        name, m = next(iter(pub.items()))
        if m.get("value") is not None:
            ci = "" if m.get("ci_low") is None else f" (95% CI {m['ci_low']:.4f}-{m['ci_high']:.4f})"
            score = f"  public {name} {m['value']:.4f}{ci}"
    fail = f" [{sub['failure_class']} failure{'' if sub.get('counted', True) else ', not counted'}]" if sub.get("failure_class") else ""
    return f"{sub['id']:>6}  {str(sub.get('created_at', ''))[:19]}  {sub['status']:<8}{fail}{score}"
