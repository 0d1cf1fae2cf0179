"""``taskgate token``: development tokens the gateway accepts."""

from __future__ import annotations

import secrets
import time

import pytest

from gateway.tokens import InvalidToken, verify

from .conftest import taskgate


async def test_the_token_verifies_with_the_secret_and_names_the_user():
    secret = secrets.token_urlsafe(32)

    result = await taskgate("token", "ada", "--ttl", "600", env={"SECRET_KEY": secret})

    assert result.code == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # the token only: $(taskgate token ada) works
    claims = verify(secret, token)
    assert claims.user_id == "ada"
    assert not claims.admin
    assert time.time() < claims.expires_at <= time.time() + 600
    with pytest.raises(InvalidToken):
        verify(secrets.token_urlsafe(32), token)


async def test_admin_makes_an_admin_token():
    secret = secrets.token_urlsafe(32)

    result = await taskgate("token", "root", "--admin", env={"SECRET_KEY": secret})

    assert result.code == 0, result.stderr
    claims = verify(secret, result.stdout.strip())
    assert (claims.user_id, claims.admin) == ("root", True)


async def test_the_default_lifetime_is_a_day():
    secret = secrets.token_urlsafe(32)

    result = await taskgate("token", "ada", env={"SECRET_KEY": secret})

    expires_in_s = verify(secret, result.stdout.strip()).expires_at - time.time()
    assert 23 * 3600 < expires_in_s <= 24 * 3600


async def test_without_secret_key_it_is_bad_usage():
    result = await taskgate("token", "ada")

    assert result.code == 2
    assert result.stdout == ""
    assert "SECRET_KEY is not set" in result.stderr


async def test_a_short_secret_is_refused_without_being_shown():
    secret = "short-but-secret"

    result = await taskgate("token", "ada", env={"SECRET_KEY": secret})

    assert result.code == 2
    assert "at least 32 bytes" in result.stderr
    assert secret not in result.stderr + result.stdout
