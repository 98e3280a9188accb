"""The challenge server's web application: the JSON API (:mod:`.api`) and the pages (:mod:`.pages`) in one
FastAPI app, with its error handling and security headers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import MutableHeaders

from lesionbench._version import __version__
from lesionbench.benchmark.errors import LesionbenchError, SubmissionError
from lesionbench.server import service
from lesionbench.server.api import ServerConfig, api
from lesionbench.server.board import Boards
from lesionbench.server.pages import error_page, pages


# ------------------------------------------------------------------------------------- app
class SecurityHeaders:
    """Adds the security headers to every HTTP response that does not set them. A plain ASGI middleware:
    Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per request, which showed under load."""

    HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "same-origin"))

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(cfg: ServerConfig) -> FastAPI:
    """The FastAPI application: API, pages and error handling."""
    app = FastAPI(title="lesionbench challenge server", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.config = cfg
    app.state.boards = Boards(cfg.db, cfg.blobs, cfg.task_meta, n_perm=cfg.n_perm)

    @app.exception_handler(service.ServerError)
    def _refused(request: Request, exc: service.ServerError) -> Response:
        headers = {"Retry-After": str(int(exc.retry_after) + 1)} if exc.retry_after is not None else None
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)
        return error_page(request, exc.status, str(exc))

    @app.exception_handler(LesionbenchError)
    def _invalid(request: Request, exc: LesionbenchError) -> Response:
        problems = exc.problems if isinstance(exc, SubmissionError) else [str(exc)]
        return JSONResponse({"detail": problems[0] if len(problems) == 1 else f"{len(problems)} problems", "problems": problems}, status_code=422)

    @app.exception_handler(ValidationError)
    def _bad_form(request: Request, exc: ValidationError) -> Response:
        message = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return _refused(request, service.Invalid(message))

    app.add_middleware(SecurityHeaders)
    app.include_router(api)
    app.include_router(pages)
    return app
