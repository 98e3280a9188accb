"""``lesionbench db``: the challenge server's database (upgrade the schema, add an organiser)."""

from __future__ import annotations

import argparse
import os
import sys

from lesionbench.cli.server.serve import add_server_location


def add_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "db",
        help="Challenge-server database: upgrade the schema (Alembic), show its revision, add an organiser.",
        description="upgrade: bring the database to the newest schema (safe to repeat). current: print its revision. "
        "add-organiser EMAIL: create an organiser account; the password is read from $LESIONBENCH_ORGANISER_PASSWORD or asked for.",
    )
    p.add_argument("action", choices=("upgrade", "current", "add-organiser"), help="what to do")
    p.add_argument("email", nargs="?", help="the organiser's e-mail (add-organiser)")
    add_server_location(p)
    p.set_defaults(func=cmd_db)


def cmd_db(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.server.db import default_url
    from lesionbench.server.migrate import current, head, upgrade

    url = args.database_url or default_url(args.folder)
    if args.action == "upgrade":
        rev = upgrade(url)
        sys.stdout.write(f"database at revision {rev} (newest: {head()}).\n")
        return 0
    if args.action == "current":
        sys.stdout.write(f"{current(url) or '(empty)'} (newest: {head()})\n")
        return 0
    if not args.email or "@" not in args.email:
        raise ConfigurationError("add-organiser needs the organiser's e-mail: lesionbench db add-organiser EMAIL")
    password = os.environ.get("LESIONBENCH_ORGANISER_PASSWORD")
    if not password:
        import getpass

        password = getpass.getpass("password (10 characters or more): ")
    if len(password) < 10:
        raise ConfigurationError("The password is shorter than 10 characters; choose a longer one.")
    from sqlalchemy import select

    from lesionbench.server.auth import hash_password
    from lesionbench.server.db import Database, User

    upgrade(url)
    db = Database.from_url(url)
    with db.session(lock=True) as s:
        email = args.email.strip().lower()
        user = s.scalar(select(User).where(User.email == email))
        if user is None:
            s.add(User(email=email, display_name=email.split("@")[0][:64], password_hash=hash_password(password), is_organiser=True))
        else:
            user.is_organiser, user.password_hash = True, hash_password(password)
    sys.stdout.write(f"organiser {email} ready.\n")
    return 0
