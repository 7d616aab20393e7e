"""The target's plain HTTP routes and its ``/ws/echo`` WebSocket, as a bare ASGI app.

Routes (Chainlit's where Chainlit has them):

- ``GET /health``: ``{"status": "ok"}``.
- ``GET /user``: 2.x style, the logged-in user as JSON (``null`` with auth
  off, 401 without a valid token); 1.x style, an HTML page, because 1.x had no
  such route and its catch-all served the UI. Clients detect the version so.
- ``POST /login`` (form ``username``, ``password``): 2.x sets an httponly
  ``access_token`` cookie and answers ``{"success": true}``; 1.x answered
  ``{"access_token": ..., "token_type": "bearer"}`` and set no cookie.
- ``GET`` anything else: an HTML page (Chainlit's UI catch-all).
- WebSocket ``/ws/echo``: each text frame comes back as JSON
  ``{"thread": <X-Chainlit-Thread-Id or "">, "text": <frame>}``, binary
  frames unchanged, so plain-WebSocket load tests can target this server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from supervisor.target.auth import (
    ACCESS_TOKEN_COOKIE,
    mint_token,
    token_from_authorization,
    token_from_cookie_header,
    verify_token,
)
from supervisor.target.faults import LINK_SCOPE_KEY, FaultInjector, LinkCutter
from supervisor.target.options import TargetOptions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ECHO_PATH = "/ws/echo"
THREAD_HEADER = b"x-chainlit-thread-id"
MAX_BODY = 64 * 1024  # a login form is tiny; refuse anything that is not
_HTML = (b"<!DOCTYPE html><html><head><title>supervisor target</title></head>"
         b"<body><div id=\"root\"></div></body></html>")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: Any,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, json.dumps(payload).encode(), "application/json", extra)


class Routes:
    """Every request that is not Socket.IO (python-socketio's ``other_asgi_app``)."""

    def __init__(self, options: TargetOptions, faults: FaultInjector) -> None:
        self._options = options
        self._faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    # ------------------------------------------------------------ HTTP

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        if path == "/health" and method in ("GET", "HEAD"):
            await _json(send, 200, {"status": "ok"})
        elif path == "/user" and method == "GET":
            await self._user(scope, send)
        elif path == "/login" and method == "POST":
            await self._login(receive, send)
        elif method in ("GET", "HEAD"):
            await _respond(send, 200, _HTML, "text/html; charset=utf-8")
        else:
            await _json(send, 405, {"detail": "Method Not Allowed"})

    async def _user(self, scope: Scope, send: Send) -> None:
        if self._options.identity_style == "1":
            await _respond(send, 200, _HTML, "text/html; charset=utf-8")
            return
        if not self._options.require_login:
            await _json(send, 200, None)  # Chainlit: no current user without auth
            return
        # Chainlit reads the cookie first and falls back to a Bearer header.
        token = (token_from_cookie_header(_header(scope, b"cookie"))
                 or token_from_authorization(_header(scope, b"authorization")))
        user = verify_token(self._options.secret, token, now=time.time()) if token else None
        if user is None:
            await _json(send, 401, {"detail": "Invalid authentication token"})
            return
        await _json(send, 200, {"identifier": user, "display_name": None, "metadata": {}})

    async def _login(self, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            await _json(send, 413, {"detail": "Request Entity Too Large"})
            return
        form = parse_qs(body.decode("utf-8", "replace"))
        username = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        if not username:
            await _json(send, 422, {"detail": "username and password are required"})
            return
        expected = self._options.password if self._options.password is not None else username
        if self._options.require_login and password != expected:
            await _json(send, 401, {"detail": "credentialssignin"})
            return
        token = mint_token(self._options.secret, username, now=time.time(),
                           ttl=self._options.token_ttl)
        if self._options.identity_style == "1":
            await _json(send, 200, {"access_token": token, "token_type": "bearer"})
            return
        cookie = (f"{ACCESS_TOKEN_COOKIE}={token}; HttpOnly; Max-Age={int(self._options.token_ttl)}"
                  "; Path=/; SameSite=lax")
        await _json(send, 200, {"success": True}, [(b"set-cookie", cookie.encode())])

    # ------------------------------------------------------------ WebSocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        if scope["path"].rstrip("/") != ECHO_PATH:
            await send({"type": "websocket.close", "code": 1008})  # uvicorn answers 403
            return
        await self._faults.delay_handshake()
        if self._faults.should_refuse():
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        thread = _header(scope, THREAD_HEADER) or ""
        link: LinkCutter | None = scope.get(LINK_SCOPE_KEY)
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                return  # websocket.disconnect
            if event.get("text") is not None:
                reply = json.dumps({"thread": thread, "text": event["text"]})
                await send({"type": "websocket.send", "text": reply})
            else:
                await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
            if link is not None and self._faults.should_drop():
                await link.cut()
                return


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None when it exceeds ``MAX_BODY``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] != "http.request":
            return b"".join(chunks)  # http.disconnect: the client went away
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)
