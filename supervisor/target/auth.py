"""Access tokens for the embedded target: HS256 JWTs made with the stdlib.

Chainlit's tokens are HS256 JWTs with an ``identifier`` claim. Writing the
same format with ``hmac`` keeps PyJWT out of the dependencies, and tokens
minted with ``supervisor.chainlit_auth.mint_jwt`` and the target's ``secret``
are accepted too, so load tests can skip the login round trip.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from http.cookies import CookieError, SimpleCookie
from typing import Any

ACCESS_TOKEN_COOKIE = "access_token"  # noqa: S105 - a cookie name, not a secret
_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, signing_input: str) -> str:
    digest = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return _b64encode(digest)


def mint_token(secret: str, identifier: str, *, now: float, ttl: float) -> str:
    """A signed token naming user ``identifier``, valid for ``ttl`` seconds from ``now``."""
    claims: dict[str, Any] = {"identifier": identifier, "display_name": None, "metadata": {},
              "iat": int(now), "exp": int(now + ttl)}
    signing_input = ".".join(_b64encode(json.dumps(part, separators=(",", ":")).encode())
                             for part in (_HEADER, claims))
    return f"{signing_input}.{_signature(secret, signing_input)}"


def _verified_claims(secret: str, token: str) -> dict[str, Any] | None:
    """The claims of a well-formed HS256 token signed with ``secret``, else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    signing_input = f"{parts[0]}.{parts[1]}"
    # compare_digest: a forged token must not learn the signature byte by byte.
    if not hmac.compare_digest(_signature(secret, signing_input), parts[2]):
        return None
    try:
        header: Any = json.loads(_b64decode(parts[0]))
        claims: Any = json.loads(_b64decode(parts[1]))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return None
    return claims if isinstance(claims, dict) else None


def verify_token(secret: str, token: str, *, now: float) -> str | None:
    """The user a token names, or None when it is malformed, forged or expired."""
    claims = _verified_claims(secret, token)
    if claims is None:
        return None
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or expires <= now:
        return None
    identifier = claims.get("identifier")
    return identifier if isinstance(identifier, str) and identifier else None


def token_from_cookie_header(header: str | None) -> str | None:
    """The ``access_token`` cookie in a ``Cookie`` header, if any."""
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(ACCESS_TOKEN_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def token_from_authorization(header: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` header, if any.

    Chainlit 1.x took the second word of the header whatever the scheme; the
    target wants ``Bearer`` so a wrong header shows up as a refusal.
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
