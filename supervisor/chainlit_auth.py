"""Chainlit authentication and version detection over HTTP.

Each helper returns cookies for ``SessionSpec(cookies=...)``: a cookie is then
sent by that one session alone, never through a shared jar (I8). They work for
both Chainlit identity styles: 2.x reads the ``access_token`` cookie; 1.x reads
only ``Authorization``, so a ``chainlit`` session on 1.x sends the same token as
``Authorization: Bearer <token>`` on its own handshake (same origin, nothing else).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any

from supervisor._http import detect_chainlit_version, server_base
from supervisor.errors import HandshakeError, HandshakeRefused

__all__ = ["ACCESS_TOKEN_COOKIE", "detect_version", "login", "mint_jwt", "token_cookies"]

ACCESS_TOKEN_COOKIE = "access_token"  # noqa: S105 - a cookie name, not a secret

detect_version = detect_chainlit_version
"""``"2"`` or ``"1"``: the identity style of the Chainlit server at a URL (cached)."""


def login(url: str, username: str, password: str, timeout: float = 10.0) -> dict[str, str]:
    """Log in with Chainlit's password auth (``POST /login``); return the session's cookies.

    2.x sets the token as a cookie; 1.x answers it in the JSON body: either way
    the result is ``{"access_token": token}`` (2.x may add chunked cookies).

    Raises ``HandshakeRefused`` with the status code when the server refuses.
    """
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    request = urllib.request.Request(  # noqa: S310 - server_base admits only http(s)
        f"{server_base(url)}/login", data=body, method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            set_cookies = response.headers.get_all("Set-Cookie") or []
            payload = _json_or_none(response.read())
    except urllib.error.HTTPError as exc:
        raise HandshakeRefused(exc.code, dict(exc.headers.items()), exc.read()) from exc
    except (OSError, ValueError) as exc:
        msg = f"login to {server_base(url)} failed: {exc}"
        raise HandshakeError(msg) from exc
    cookies = _parse_set_cookies(set_cookies)
    if ACCESS_TOKEN_COOKIE not in cookies and isinstance(payload, Mapping):
        # Chainlit 1.x answers the token in the body instead of a cookie.
        token = payload.get("access_token")
        if isinstance(token, str):
            cookies[ACCESS_TOKEN_COOKIE] = token
    if ACCESS_TOKEN_COOKIE not in cookies:
        msg = f"login to {server_base(url)} returned no {ACCESS_TOKEN_COOKIE}"
        raise HandshakeError(msg)
    return cookies


def token_cookies(token: str) -> dict[str, str]:
    """Cookies that authenticate a Chainlit session (1.x or 2.x) with an existing token."""
    return {ACCESS_TOKEN_COOKIE: token}


def mint_jwt(secret: str, identifier: str, *, metadata: Mapping[str, Any] | None = None,
             display_name: str | None = None, ttl: float = 3600.0,
             now: float | None = None) -> str:
    """A token for user ``identifier``, signed with the app's ``CHAINLIT_AUTH_SECRET``.

    For load tests with many distinct users without a login round trip each.
    Needs the ``jwt`` extra (PyJWT): ``pip install 'session-supervisor[jwt]'``.
    """
    try:
        import jwt  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        msg = "mint_jwt needs PyJWT: pip install 'session-supervisor[jwt]'"
        raise ImportError(msg) from exc
    issued = time.time() if now is None else now
    claims = {"identifier": identifier, "display_name": display_name,
              "metadata": dict(metadata or {}), "iat": int(issued), "exp": int(issued + ttl)}
    token: str = jwt.encode(claims, secret, algorithm="HS256")
    return token


def _parse_set_cookies(headers: list[str]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for header in headers:
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        cookies.update({name: morsel.value for name, morsel in jar.items()})
    return cookies


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
