"""``lesionbench db upgrade``: bring the server's database to the newest schema with Alembic.

The migration scripts ship inside the package (``lesionbench/server/alembic``); no ``alembic.ini`` is
needed. Upgrading an up-to-date database does nothing, so the server runs it at every start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

logger = logging.getLogger(__name__)

SCRIPTS = Path(__file__).with_name("alembic")


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` with the packaged scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> str:
    """Upgrade the database at ``url`` to ``revision``; returns the revision it is at afterwards."""
    command.upgrade(alembic_config(url), revision)
    return current(url)


def current(url: str) -> str:
    """The database's revision ("" for an empty database)."""
    from lesionbench.server.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision() or ""
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision the package ships."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""
