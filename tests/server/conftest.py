"""Fixtures of the challenge-server tests (defined in _server_fixtures, shared with the tests' helpers)."""

from _server_fixtures import database_url, server, world  # noqa: F401
