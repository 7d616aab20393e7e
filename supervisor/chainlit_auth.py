"""Chainlit authentication and version detection over HTTP.

Each helper returns cookies for ``SessionSpec(cookies=...)``: a cookie is then
sent by that one session alone, never through a shared jar (I8).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any

from supervisor.errors import HandshakeError, HandshakeRefused

ACCESS_TOKEN_COOKIE = "access_token"  # noqa: S105 - a cookie name, not a secret

_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def http_base(url: str) -> str:
    """The HTTP base of a server named by ``ws(s)://`` or ``http(s)://`` URL, path kept.

    A trailing Socket.IO path (``/ws/socket.io``) is dropped, so the URL of a
    session and the URL of its server give the same base.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        msg = f"not a server URL (http, https, ws or wss with a host): {url!r}"
        raise ValueError(msg)
    path = parts.path.rstrip("/")
    for suffix in ("/ws/socket.io", "/socket.io"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


def detect_version(url: str, timeout: float = 10.0) -> str:
    """``"2"`` or ``"1"``: which identity style the Chainlit server at ``url`` speaks.

    Asks ``GET /user`` once per server (cached): Chainlit 2.x answers JSON (a
    user, or a JSON 401), 1.x answers its HTML page there.
    """
    base = http_base(url)
    with _versions_lock:
        if base in _versions:
            return _versions[base]
    # http_base admits only http(s), so urlopen never reads a file: URL.
    request = urllib.request.Request(  # noqa: S310
        f"{base}/user", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            content_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        content_type = exc.headers.get("Content-Type", "")
    except (OSError, ValueError) as exc:
        msg = f"cannot detect the Chainlit version of {base}: {exc}"
        raise HandshakeError(msg) from exc
    version = "1" if "text/html" in content_type else "2"
    with _versions_lock:
        _versions[base] = version
    return version


def login(url: str, username: str, password: str, timeout: float = 10.0) -> dict[str, str]:
    """Log in with Chainlit's password auth (``POST /login``); return the session's cookies.

    Raises ``HandshakeRefused`` with the status code when the server refuses.
    """
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    request = urllib.request.Request(  # noqa: S310 - http_base admits only http(s)
        f"{http_base(url)}/login", data=body, method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            set_cookies = response.headers.get_all("Set-Cookie") or []
            payload = _json_or_none(response.read())
    except urllib.error.HTTPError as exc:
        raise HandshakeRefused(exc.code, dict(exc.headers.items()), exc.read()) from exc
    except (OSError, ValueError) as exc:
        msg = f"login to {http_base(url)} failed: {exc}"
        raise HandshakeError(msg) from exc
    cookies = _parse_set_cookies(set_cookies)
    if ACCESS_TOKEN_COOKIE not in cookies and isinstance(payload, Mapping):
        # Chainlit 1.x answers the token in the body instead of a cookie.
        token = payload.get("access_token")
        if isinstance(token, str):
            cookies[ACCESS_TOKEN_COOKIE] = token
    if ACCESS_TOKEN_COOKIE not in cookies:
        msg = f"login to {http_base(url)} returned no {ACCESS_TOKEN_COOKIE}"
        raise HandshakeError(msg)
    return cookies


def token_cookies(token: str) -> dict[str, str]:
    """Cookies that authenticate a Chainlit 2.x session with an existing token."""
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
