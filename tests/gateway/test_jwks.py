"""Tokens of an identity provider: RS256/ES256 verified against a JWKS the test serves over
real HTTP, with issuer, audience and key rotation."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.settings import GatewaySettings

ISSUER = "https://login.example"
AUDIENCE = "taskgate"


@dataclass
class SigningKey:
    algorithm: str
    private: Any
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        public = codec.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def token(self, subject: str = "ada", **claims: Any) -> str:
        payload = {
            "sub": subject,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 600,
            **claims,
        }
        return jwt.encode(payload, self.private, self.algorithm, headers={"kid": self.kid})


def rsa_key() -> SigningKey:
    return SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key() -> SigningKey:
    return SigningKey("ES256", ec.generate_private_key(ec.SECP256R1()))


class IdentityProvider:
    """A JWKS endpoint on a free port of 127.0.0.1; ``keys`` is what it serves now."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = json.dumps({"keys": [key.jwk() for key in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    server = IdentityProvider()
    yield server
    server.close()


def with_provider(
    settings: GatewaySettings, provider: IdentityProvider, **overrides: Any
) -> GatewaySettings:
    # No cooldown unless a test asks: a rotated key is fetched at once.
    fields = {"jwks_refetch_cooldown_s": 0.0, **overrides}
    return replace(
        settings, jwks_url=provider.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **fields
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_rs256_and_es256_tokens_of_the_provider_are_accepted(
    gateway_app, gateway_settings, provider
):
    rsa_signer, ec_signer = rsa_key(), ec_key()
    provider.keys = [rsa_signer, ec_signer]
    settings = with_provider(gateway_settings, provider)
    async with gateway_app(settings, user=None) as client:
        by_rsa = await client.get("/session", headers=auth(rsa_signer.token("ada")))
        by_ec = await client.get("/session", headers=auth(ec_signer.token("bob", roles=["admin"])))
        own = await client.get("/session", headers={"Authorization": _own(settings, "eve")})
        # The page's sign-in takes them too.
        signed_in = await client.post("/session", json={"token": ec_signer.token("grace")})
        by_cookie = await client.get("/session")

    assert (by_rsa.json()["user_id"], by_rsa.json()["admin"]) == ("ada", False)
    assert (by_ec.json()["user_id"], by_ec.json()["admin"]) == ("bob", True)
    assert own.json()["user_id"] == "eve"  # SECRET_KEY's tokens still work
    assert signed_in.status_code == 200
    assert by_cookie.json()["user_id"] == "grace"
    assert provider.fetches == 1  # the key set is kept


async def test_the_admin_role_may_sit_in_a_nested_claim(gateway_app, gateway_settings, provider):
    signer = rsa_key()
    provider.keys = [signer]
    settings = with_provider(
        gateway_settings, provider, jwt_roles_claim="realm_access.roles", jwt_admin_role="ops"
    )
    async with gateway_app(settings, user=None) as client:
        nested = signer.token("root", realm_access={"roles": ["ops", "user"]})
        admin = await client.get("/session", headers=auth(nested))
        top_level = await client.get("/session", headers=auth(signer.token("x", roles=["ops"])))

    assert admin.json()["admin"] is True
    assert top_level.json()["admin"] is False


async def test_tokens_with_the_wrong_issuer_audience_key_or_algorithm_are_401(
    gateway_app, gateway_settings, provider
):
    signer, stranger = rsa_key(), rsa_key()
    provider.keys = [signer]
    # A stranger's key under the provider's key id: a forged signature.
    impostor = SigningKey("RS256", stranger.private, kid=signer.kid)
    public_pem = signer.jwk()
    now = int(time.time())
    tokens = {
        "issuer": signer.token(iss="https://evil.example"),
        "audience": signer.token(aud="someone-else"),
        "no audience": jwt.encode(
            {"sub": "ada", "iss": ISSUER, "exp": now + 600},
            signer.private,
            "RS256",
            headers={"kid": signer.kid},
        ),
        "expired": signer.token(exp=now - 60),
        "forged": impostor.token(),
        "unknown key": stranger.token(),
        # HS256 "signed" with the provider's public key: the classic algorithm confusion.
        "confusion": jwt.encode(
            {"sub": "ada", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600},
            json.dumps(public_pem).encode() * 2,
            "HS256",
            headers={"kid": signer.kid},
        ),
        "none": jwt.encode(
            {"sub": "ada", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600},
            None,
            "none",
            headers={"kid": signer.kid},
        ),
    }
    settings = with_provider(gateway_settings, provider)
    async with gateway_app(settings, user=None) as client:
        answers = {
            name: await client.get("/session", headers=auth(token))
            for name, token in tokens.items()
        }

    for name, response in answers.items():
        assert response.status_code == 401, name
    assert "expired" in answers["expired"].json()["error"]["message"]


async def test_a_rotated_key_is_fetched_when_a_token_names_an_unknown_kid(
    gateway_app, gateway_settings, provider
):
    old, new = rsa_key(), ec_key()
    provider.keys = [old]
    settings = with_provider(gateway_settings, provider)
    async with gateway_app(settings, user=None) as client:
        before = await client.get("/session", headers=auth(old.token("ada")))
        provider.keys = [new]  # the provider rotates its key
        after = await client.get("/session", headers=auth(new.token("bob")))

    assert before.status_code == 200
    assert after.status_code == 200 and after.json()["user_id"] == "bob"
    assert provider.fetches == 2


async def test_made_up_key_ids_do_not_make_the_gateway_flood_the_provider(
    gateway_app, gateway_settings, provider
):
    signer = rsa_key()
    provider.keys = [signer]
    settings = with_provider(gateway_settings, provider, jwks_refetch_cooldown_s=3600.0)
    async with gateway_app(settings, user=None) as client:
        known = await client.get("/session", headers=auth(signer.token()))
        made_up = [
            await client.get(
                "/session",
                headers=auth(SigningKey("RS256", signer.private, kid=f"kid-{n}").token()),
            )
            for n in range(20)
        ]

    assert known.status_code == 200
    assert {response.status_code for response in made_up} == {401}
    assert provider.fetches == 1


async def test_an_unreachable_provider_is_503(gateway_app, gateway_settings, provider):
    signer = rsa_key()
    settings = with_provider(gateway_settings, provider)
    provider.close()
    async with gateway_app(settings, user=None) as client:
        response = await client.get("/session", headers=auth(signer.token()))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_a_provider_without_issuer_and_audience_is_refused(gateway_settings, provider):
    from gateway.auth import Credentials

    settings = replace(gateway_settings, jwks_url=provider.url)
    with pytest.raises(ValueError, match="JWT_ISSUER and JWT_AUDIENCE"):
        Credentials.from_settings(settings, sessions=None)  # type: ignore[arg-type]


def _own(settings: GatewaySettings, user: str) -> str:
    from gateway.tokens import mint

    return f"Bearer {mint(settings.secret_key, user, ttl_s=600)}"
