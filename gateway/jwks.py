"""Tokens of an identity provider: RS256/ES256 JWTs verified against its JWKS.

PyJWT's ``PyJWKClient`` fetches the key set from ``JWKS_URL`` and keeps it for
``JWKS_CACHE_S``; a token naming a key id the set lacks (the provider rotated
its keys) makes it fetch the set again, at most once per
``JWKS_REFETCH_COOLDOWN_S``, so tokens with made-up key ids cannot turn the
gateway into a flood against the provider. Every token must name this
provider as its issuer (``JWT_ISSUER``) and taskgate as its audience
(``JWT_AUDIENCE``). The fetch is blocking (urllib): ``verify`` runs in a thread.
"""

from __future__ import annotations

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

from .tokens import Claims, InvalidToken, claims_of

ALGORITHMS = ("RS256", "ES256")


class ProviderUnavailable(Exception):
    """The identity provider's key set could not be fetched."""


class ExternalTokens:
    """Verifies tokens of one identity provider."""

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        roles_claim: str,
        admin_role: str,
        cache_s: float,
        refetch_cooldown_s: float,
        timeout_s: float,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE (a token must name both)")
        self._client = PyJWKClient(
            jwks_url,
            lifespan=cache_s,
            cooldown_duration=refetch_cooldown_s,
            timeout=timeout_s,
        )
        self._issuer = issuer
        self._audience = audience
        self._roles_claim = roles_claim
        self._admin_role = admin_role

    def verify(self, token: str) -> Claims:
        """The token's claims, or InvalidToken; may block on fetching the key set."""
        try:
            key = self._client.get_signing_key_from_jwt(token)
        except PyJWKClientConnectionError as exc:
            raise ProviderUnavailable(
                f"the identity provider's keys are unreachable: {exc}"
            ) from exc
        except PyJWKClientError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["sub", "exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        return claims_of(payload, roles_claim=self._roles_claim, admin_role=self._admin_role)
