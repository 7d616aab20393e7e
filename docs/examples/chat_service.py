"""A chat service on Starlette + uvicorn: one supervised Chainlit session per user.

    python docs/examples/chat_service.py [--target http://HOST:PORT] [--port 8080]

Without ``--target`` it starts the embedded Chainlit-compatible target first.
Endpoints:

- ``POST /users/{user}/thread`` ``{"thread_id": "..."}``: switch the user's
  thread (a Resume); answers once connected for it.
- ``POST /users/{user}/messages`` ``{"text": "..."}``: chat; the reply streams
  back token by token as ``text/plain``.
- ``GET /users/{user}``: the session's state.
- ``GET /metrics``: Prometheus metrics; ``GET /health``: 200 or 503, with why.

Everything is awaited on the event loop through ``supervisor.aio``; nothing
blocks it. Every request input is bounded (user names, body size, users).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from supervisor import Event, Lifecycle, LifecycleKind, RestartPolicy, SessionSpec
from supervisor.aio import AsyncSession, AsyncSupervisor
from supervisor.errors import SupervisorError
from supervisor.prometheus import SupervisorCollector

USER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_USERS = 1000
MAX_BODY = 16 * 1024
REPLY_TIMEOUT = 60.0
_ENDED = (LifecycleKind.LOST, LifecycleKind.FAILED, LifecycleKind.CLOSED)


class BadRequest(Exception):
    """Answered with 400 and the message."""


class ChatService:
    """The users' sessions on one supervisor, and the routes that drive them."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.sup: AsyncSupervisor | None = None
        self.users: dict[str, AsyncSession] = {}
        self.locks: dict[str, asyncio.Lock] = {}  # one turn or switch at a time per user
        self.registry = CollectorRegistry()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        # An interactive service wants users back within a second or two of
        # the chat server's return: short backoffs, the default budget.
        policy = RestartPolicy(backoff_base=0.1, backoff_cap=1.0)
        async with AsyncSupervisor.start(policy) as sup:
            self.sup = sup
            self.registry.register(SupervisorCollector(sup))
            yield

    def session(self, user: str, thread_id: str | None = None) -> AsyncSession:
        """The user's session, opened (with ``thread_id``) on first use."""
        if not USER_NAME.fullmatch(user):
            raise BadRequest("user names are 1-64 letters, digits, '-' or '_'")
        if user not in self.users:
            if len(self.users) >= MAX_USERS:
                raise BadRequest("too many users")
            assert self.sup is not None
            self.users[user] = self.sup.open(SessionSpec(
                url=self.target_url, protocol="chainlit", thread_id=thread_id))
            self.locks[user] = asyncio.Lock()
        return self.users[user]

    async def switch_thread(self, request: Request) -> Response:
        user, body = request.path_params["user"], await json_body(request)
        thread_id = body.get("thread_id")
        if not isinstance(thread_id, str):
            raise BadRequest("thread_id must be a string")
        session = self.session(user, thread_id)
        async with self.locks[user]:
            result = await asyncio.wait_for(session.resume(thread_id), REPLY_TIMEOUT)
        return JSONResponse({"thread_id": result.thread_id, "found": result.found,
                             "generation": result.generation})

    async def chat(self, request: Request) -> Response:
        user, body = request.path_params["user"], await json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise BadRequest("text must be a non-empty string")
        session = self.session(user)
        return StreamingResponse(self.reply_tokens(user, session, text), media_type="text/plain")

    async def reply_tokens(self, user: str, session: AsyncSession, text: str) -> AsyncIterator[str]:
        """The reply's tokens as the session receives them, then nothing or an error line."""
        async with self.locks[user]:
            started = time.monotonic()
            reply = session.chat(text)
            streams: set[str] = set()  # message ids of this turn's streamed replies
            async for item in events_until(session, reply):
                if isinstance(item, Lifecycle):
                    if item.kind in _ENDED and item.at >= started:
                        break
                    continue
                if item.received_at < started:
                    continue  # left over from before this turn
                if item.name == "stream_start" and isinstance(item.data, dict):
                    streams.add(item.data.get("id", ""))
                    yield str(item.data.get("output", ""))
                elif (item.name == "stream_token" and isinstance(item.data, dict)
                      and item.data.get("id") in streams and not item.data.get("isInput")):
                    yield str(item.data.get("token", ""))
            try:
                await asyncio.wait_for(reply, REPLY_TIMEOUT)
            except (SupervisorError, TimeoutError) as exc:
                yield f"\n[error: {type(exc).__name__}: {exc}]"

    async def state(self, request: Request) -> Response:
        user = request.path_params["user"]
        if user not in self.users:
            return JSONResponse({"error": "no such user"}, status_code=404)
        snapshot = asdict(self.users[user].state())
        snapshot["status"] = snapshot["status"].value
        return JSONResponse(snapshot)

    async def metrics(self, _request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def health(self, _request: Request) -> Response:
        assert self.sup is not None
        verdict = self.sup.health()
        return JSONResponse(verdict.as_dict(), status_code=200 if verdict.healthy else 503)


async def events_until(session: AsyncSession, reply: asyncio.Future[Any]
                       ) -> AsyncIterator[Event | Lifecycle]:
    """The session's events until ``reply`` settles, then those already buffered.

    A turn's events are buffered before its reply future settles, so none of
    them is missed; the wait for each is bounded.
    """
    events = session.events()
    while not reply.done():
        following = asyncio.ensure_future(anext(events))
        await asyncio.wait({following, reply}, timeout=REPLY_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        if not following.done():
            following.cancel()
            break
        yield following.result()
    while len(events):
        yield await anext(events)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, refused if large or malformed (bytes from the network)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"body over {MAX_BODY} bytes")
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise BadRequest("body must be JSON") from exc
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


async def bad_request(_request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


def make_app(target_url: str) -> Starlette:
    service = ChatService(target_url)
    routes = [
        Route("/users/{user}/thread", service.switch_thread, methods=["POST"]),
        Route("/users/{user}/messages", service.chat, methods=["POST"]),
        Route("/users/{user}", service.state),
        Route("/metrics", service.metrics),
        Route("/health", service.health),
    ]
    return Starlette(routes=routes, lifespan=service.lifespan,
                     exception_handlers={BadRequest: bad_request, ValueError: bad_request})


def serve(target_url: str, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; prints ``listening on URL`` once the port is bound."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)  # connections wait in the backlog until uvicorn accepts them
    print(f"listening on http://{host}:{listener.getsockname()[1]}", flush=True)
    config = uvicorn.Config(make_app(target_url), log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[listener])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="Chainlit server base URL (default: embedded target)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    if args.target:
        serve(args.target, args.host, args.port)
        return
    from supervisor.target import TargetServer  # noqa: PLC0415 - only without --target

    with TargetServer(token_delay=0.05) as target:
        serve(target.url, args.host, args.port)


if __name__ == "__main__":
    main()
