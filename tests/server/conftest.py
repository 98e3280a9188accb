"""Fixtures of the challenge-server tests (defined in _server_fixtures, shared with the tests' helpers)."""

import pytest
from _server_fixtures import _templates, database_url, server, world  # noqa: F401


@pytest.fixture(autouse=True)
def _cheap_passwords():
    """argon2's cheapest profile: the default costs ~0.5 s a hash on a loaded 2-core machine."""
    from argon2 import PasswordHasher, profiles

    from lesionbench.server import auth

    previous = auth.use_password_hasher(PasswordHasher.from_parameters(profiles.CHEAPEST))
    yield
    auth.use_password_hasher(previous)
