"""The challenge server: participants submit from anywhere, the organiser holds the labels, the board is live.

- :mod:`.db` SQLAlchemy models and engine (SQLite in the organiser folder, or PostgreSQL by URL);
  :mod:`.migrate` Alembic migrations (``lesionbench db upgrade``);
- :mod:`.auth` passwords, sessions with CSRF, API tokens, rate limits; :mod:`.service` who may do what;
- :mod:`.jobs` the jobs table with leases; :mod:`.worker` scoring with the leaderboard's submission code;
- :mod:`.blobs` the content-addressed upload store; :mod:`.board` boards with CIs, rank intervals, tiers;
- :mod:`.app` the JSON API, :mod:`.pages` the HTML pages, :mod:`.views` what leaves the server;
- :mod:`.client` ``lesionbench submit --server`` and ``lesionbench submissions`` (and from Python);
- :mod:`.demo` ``lesionbench serve --demo``.

Built on :mod:`lesionbench.leaderboard` (scoring, statistics, templates); nothing below imports it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_server(folder: str | Path, *, database_url: str | None = None, task_loader: Any = None, migrate: bool = True, **options: Any) -> Any:
    """A :class:`~lesionbench.server.api.ServerConfig` for the organiser ``folder``: the database
    (``database_url``, else ``$LESIONBENCH_DATABASE_URL``, else ``folder/lesionbench.db``), upgraded to the
    newest schema unless ``migrate`` is False, the blob store ``folder/blobs`` and the session key."""
    from lesionbench.server.api import ServerConfig, secret_key_for
    from lesionbench.server.blobs import BlobStore
    from lesionbench.server.db import Database, default_url
    from lesionbench.server.migrate import upgrade
    from lesionbench.server.worker import default_task_loader

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    url = database_url or default_url(folder)
    if migrate:
        upgrade(url)
    loader = task_loader or default_task_loader
    return ServerConfig(db=Database.from_url(url), blobs=BlobStore(folder / "blobs"), secret_key=secret_key_for(folder), task_meta=lambda name: loader(name).meta, **options)
