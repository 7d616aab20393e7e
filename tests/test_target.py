"""The embedded Chainlit-compatible target, driven by real clients over loopback."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
import websocket

from supervisor.target import TargetServer

WAIT = 10.0  # seconds any expected event may take before a test fails
PROCESS_WAIT = 30.0  # a fresh interpreter importing the stack is slow on a loaded machine


# ---------------------------------------------------------------- helpers


class ChatClient:
    """A synchronous python-socketio client that records every event in arrival order.

    ``connect_error`` and ``disconnect`` are recorded too, as events of those names.
    """

    def __init__(self, server: TargetServer, ask_answer: str | None = None) -> None:
        self.server = server
        self.events: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self.sio = socketio.Client(reconnection=False, handle_sigint=False)
        self.sio.on("*", self._record)
        self.sio.on("connect_error", lambda data=None: self._record("connect_error", data))
        self.sio.on("disconnect", lambda *reason: self._record("disconnect", reason))
        self.sio.on("ask", self._on_ask)
        self._ask_answer = ask_answer
        self._sockets: list[Any] = []

    def _record(self, event: str, data: Any = None) -> None:
        with self._cond:
            self.events.append((event, data))
            self._cond.notify_all()

    def _on_ask(self, data: Any) -> dict[str, Any]:
        self._record("ask", data)
        return {"id": str(uuid.uuid4()), "threadId": "", "output": self._ask_answer,
                "type": "user_message", "createdAt": "2026-01-01T00:00:00Z"}

    def connect(self, *, auth: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, wait_timeout: float = 5) -> None:
        try:
            self.sio.connect(self.server.url, auth=auth, headers=headers or {},
                             transports=["websocket"], socketio_path="ws/socket.io",
                             wait_timeout=wait_timeout)
        finally:
            if self.sio.eio.ws is not None:
                self._sockets.append(self.sio.eio.ws)

    def send(self, text: str) -> None:
        message = {"id": str(uuid.uuid4()), "threadId": "", "output": text, "name": "User",
                   "type": "user_message", "createdAt": "2026-01-01T00:00:00Z"}
        self.sio.emit("client_message", {"message": message, "fileReferences": []})

    def wait_for(self, predicate: Callable[[ChatClient], bool], what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), WAIT):
                pytest.fail(f"timed out waiting for {what}; events: {self.events!r}")

    def wait_event(self, name: str, count: int = 1) -> list[Any]:
        """The data of the first ``count`` events called ``name``, once they arrived."""
        self.wait_for(lambda c: len(c.named(name)) >= count, f"{count} x {name}")
        return self.named(name)[:count]

    def named(self, name: str) -> list[Any]:
        with self._cond:
            return [data for event, data in self.events if event == name]

    def turn(self, text: str) -> dict[str, Any]:
        """Send ``text``; return the reply's ``new_message`` once its ``task_end`` came."""
        with self._cond:
            start = len(self.events)
        self.send(text)

        def is_reply(event: str, data: Any) -> bool:
            # The on_message run step is a new_message too; the reply is the assistant's.
            return event == "new_message" and data.get("type") == "assistant_message"

        def turn_ended(client: ChatClient) -> bool:
            seen = client.events[start:]
            replies = [i for i, (event, data) in enumerate(seen) if is_reply(event, data)]
            return bool(replies) and "task_end" in [event for event, _ in seen[replies[0]:]]

        self.wait_for(turn_ended, f"the reply to {text!r}")
        with self._cond:
            return next(data for event, data in self.events[start:] if is_reply(event, data))

    def close(self) -> None:
        self.sio.disconnect()
        self.sio.shutdown()
        # python-engineio's client never closes its socket when the server
        # closed the connection first (a cut, a stopped server): release it here.
        for ws in self._sockets:
            ws.shutdown()


def auth(session_id: str, thread_id: str = "") -> dict[str, str]:
    """A Chainlit 2.x ``auth`` payload, as useChatSession.ts builds it."""
    return {"clientType": "webapp", "sessionId": session_id, "threadId": thread_id,
            "userEnv": "{}", "chatProfile": ""}


def post_login(server: TargetServer, username: str,
               password: str) -> tuple[int, dict[str, str], Any]:
    """``POST /login``; returns status, lower-cased headers (Set-Cookie kept whole), JSON."""
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    # S310: the URL is the target's own http:// base, never a file: URL.
    request = urllib.request.Request(f"{server.url}/login", data=body, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
            return (response.status, {k.lower(): v for k, v in response.headers.items()},
                    json.load(response))
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.load(exc)


def cookie_for(server: TargetServer, username: str) -> dict[str, str]:
    """The ``Cookie`` header of a logged-in user (password == username by default)."""
    status, headers, _ = post_login(server, username, username)
    assert status == 200
    return {"Cookie": headers["set-cookie"].split(";", 1)[0]}


def steps_of(server: TargetServer, thread_id: str) -> list[dict[str, Any]]:
    """The stored steps of a thread that must exist."""
    thread = server.thread(thread_id)
    assert thread is not None, f"thread {thread_id} was never created"
    steps: list[dict[str, Any]] = thread["steps"]
    return steps


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """GET; returns status, content type and body, for error statuses too."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http:// only
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()


class Harness:
    """Targets and clients a test opened; clients close before their servers stop."""

    def __init__(self) -> None:
        self.servers: list[TargetServer] = []
        self.clients: list[ChatClient] = []

    def target(self, **options: Any) -> TargetServer:
        server = TargetServer(port=0, **options).start()
        self.servers.append(server)
        return server

    def client(self, server: TargetServer, **kwargs: Any) -> ChatClient:
        client = ChatClient(server, **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for server in self.servers:
            server.stop()


@pytest.fixture
def harness() -> Iterator[Harness]:
    """A :class:`Harness`, closed at teardown even after a failure."""
    opened = Harness()
    yield opened
    opened.close()


# ---------------------------------------------------------------- HTTP


def test_health_answers_on_a_free_port_quickly() -> None:
    """Port 0 binds a free port; the server starts quickly and /health answers."""
    begun = time.monotonic()
    with TargetServer(port=0) as server:
        # About 20 ms on an idle machine; the bound leaves room for loaded CI hosts.
        assert time.monotonic() - begun < 5.0
        assert server.port > 0
        status, content_type, body = http_get(f"{server.url}/health")
    assert (status, content_type, json.loads(body)) == (200, "application/json",
                                                        {"status": "ok"})


def test_login_sets_httponly_cookie_and_refuses_wrong_password() -> None:
    """POST /login sets an httponly access_token cookie; a wrong password gets 401."""
    with TargetServer(require_login=True) as server:
        status, headers, payload = post_login(server, "alice", "alice")
        assert (status, payload) == (200, {"success": True})
        assert headers["set-cookie"].startswith("access_token=")
        assert "HttpOnly" in headers["set-cookie"]
        assert post_login(server, "alice", "wrong")[0] == 401


def test_user_route_tells_the_two_styles_apart() -> None:
    """GET /user is JSON on the 2.x style (401, then the user) and HTML on the 1.x style."""
    with TargetServer(require_login=True) as server:
        status, content_type, _ = http_get(f"{server.url}/user")
        assert (status, content_type) == (401, "application/json")
        status, _, body = http_get(f"{server.url}/user", cookie_for(server, "bob"))
        assert status == 200
        assert json.loads(body)["identifier"] == "bob"
    with TargetServer(identity_style="1") as server:
        status, content_type, _ = http_get(f"{server.url}/user")
        assert status == 200
        assert content_type.startswith("text/html")


# ---------------------------------------------------------------- Socket.IO, 2.x identity


def test_chat_turn_streams_in_chainlit_order(harness: Harness) -> None:
    """A logged-in 2.x client gets stream_start, stream_tokens, new_message, task_end in order."""
    server = harness.target(require_login=True)
    client = harness.client(server)
    client.connect(auth=auth("s-1"), headers=cookie_for(server, "alice"))
    client.sio.emit("connection_successful")
    reply = client.turn("hello big wide world")
    names = [name for name, _ in client.events]
    start = names.index("stream_start")
    tail = names[start:]
    assert tail[:4] == ["stream_start", "stream_token", "stream_token", "stream_token"]
    assert tail[4:] == ["new_message", "update_message", "task_end"]  # reply, run step end
    assert "task_start" in names[:start]
    stream_start = client.named("stream_start")[0]
    tokens = [stream_start["output"]] + [t["token"] for t in client.named("stream_token")]
    assert "".join(tokens) == reply["output"] == "hello big wide world"
    assert {t["id"] for t in client.named("stream_token")} == {reply["id"]}
    assert reply["threadId"] == stream_start["threadId"]


def test_resume_with_new_session_replays_history(harness: Harness) -> None:
    """A new sessionId with an existing threadId gets resume_thread with that thread's history."""
    server = harness.target(require_login=True)
    cookie = cookie_for(server, "alice")
    first = harness.client(server)
    first.connect(auth=auth("s-a"), headers=cookie)
    thread_id = first.turn("remember me")["threadId"]
    first.close()
    second = harness.client(server)
    second.connect(auth=auth("s-b", thread_id), headers=cookie)
    second.sio.emit("connection_successful")
    thread = second.wait_event("resume_thread")[0]
    assert thread["id"] == thread_id
    assert [step["output"] for step in thread["steps"]] == ["remember me", "remember me"]
    assert [step["type"] for step in thread["steps"]] == ["user_message",
                                                          "assistant_message"]
    assert second.named("first_interaction") == [{"interaction": "resume",
                                                  "thread_id": thread_id}]
    assert second.turn("and more")["threadId"] == thread_id
    assert server.handshakes()[-1]["outcome"] == "accepted"


def test_reconnect_with_same_session_ignores_new_thread(harness: Harness) -> None:
    """A known sessionId restores its session: a different threadId does not switch threads."""
    server = harness.target()
    first = harness.client(server)
    first.connect(auth=auth("s-keep"))
    old_thread = first.turn("on the old thread")["threadId"]
    first.close()
    again = harness.client(server)
    again.connect(auth=auth("s-keep", "t-new"))
    again.sio.emit("connection_successful")
    assert again.turn("still old?")["threadId"] == old_thread
    record = server.handshakes()[-1]
    assert (record["outcome"], record["thread_id"], record["bound_thread_id"]) == (
        "restored", "t-new", old_thread)
    assert server.thread("t-new") is None
    assert len(steps_of(server, old_thread)) == 4


def test_reply_tokens_cycle_the_words(harness: Harness) -> None:
    """reply_tokens=N streams exactly N tokens, cycling over the message's words."""
    server = harness.target(reply_tokens=5, token_delay=0.001)
    client = harness.client(server)
    client.connect(auth=auth("s-long"))
    assert client.turn("tick tock")["output"] == "tick tock tick tock tick"
    assert len(client.named("stream_start")) + len(client.named("stream_token")) == 5


def test_unknown_thread_gets_resume_thread_error(harness: Harness) -> None:
    """A threadId that does not exist yet answers resume_thread_error, then starts that thread."""
    server = harness.target()
    client = harness.client(server)
    client.connect(auth=auth("s-new", "t-fresh"))
    client.sio.emit("connection_successful")
    assert client.wait_event("resume_thread_error") == ["Thread not found."]
    assert client.turn("first words")["threadId"] == "t-fresh"
    assert server.thread("t-fresh") is not None


def test_require_login_refuses_connect_without_cookie(harness: Harness) -> None:
    """No cookie: the connect is refused with a message (opaque_refusals: Chainlit's text)."""
    server = harness.target(require_login=True)
    client = harness.client(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(auth=auth("s-anon"))
    assert client.named("connect_error") == [{"message": "authentication failed"}]
    assert server.handshakes()[-1]["outcome"] == "refused"
    opaque = harness.target(require_login=True, opaque_refusals=True)
    quiet = harness.client(opaque)
    with pytest.raises(socketio.exceptions.ConnectionError):
        quiet.connect(auth=auth("s-anon"))
    assert quiet.named("connect_error") == [{"message": "Connection refused by server"}]


def test_foreign_thread_is_refused_or_answered_as_not_found(harness: Harness) -> None:
    """Another user's thread refuses the connect (Chainlit 2.9+), or errors in 'error' mode."""
    for mode in ("refuse", "error"):
        server = harness.target(require_login=True, foreign_thread=mode)
        owner = harness.client(server)
        owner.connect(auth=auth("s-owner"), headers=cookie_for(server, "alice"))
        thread_id = owner.turn("private")["threadId"]
        intruder = harness.client(server)
        if mode == "refuse":
            with pytest.raises(socketio.exceptions.ConnectionError):
                intruder.connect(auth=auth("s-intruder", thread_id),
                                 headers=cookie_for(server, "mallory"))
            assert intruder.named("connect_error") == [{"message": "authorization failed"}]
            continue
        intruder.connect(auth=auth("s-intruder", thread_id),
                         headers=cookie_for(server, "mallory"))
        intruder.sio.emit("connection_successful")
        assert intruder.wait_event("resume_thread_error") == ["Thread not found."]
        assert intruder.turn("hello?")["threadId"] != thread_id
        assert len(steps_of(server, thread_id)) == 2


def test_clear_session_drops_the_session(harness: Harness) -> None:
    """After an acknowledged clear_session and a close, the same sessionId starts afresh."""
    server = harness.target()
    first = harness.client(server)
    first.connect(auth=auth("s-clear"))
    first.turn("bye")
    # With an ack: a close right after a bare emit can reach the server first.
    first.sio.call("clear_session", timeout=WAIT)
    first.close()
    again = harness.client(server)
    again.connect(auth=auth("s-clear"))
    assert [h["outcome"] for h in server.handshakes()] == ["accepted", "accepted"]


def test_ask_is_answered_through_the_ack(harness: Harness) -> None:
    """A '/ask' message emits ask with an ack; the client's answer comes back in the reply."""
    server = harness.target()
    client = harness.client(server, ask_answer="forty-two")
    client.connect(auth=auth("s-ask"))
    reply = client.turn("/ask what is the answer")
    ask = client.named("ask")[0]
    assert ask["msg"]["output"] == "what is the answer"
    assert ask["spec"]["type"] == "text"
    assert reply["output"] == "you answered: forty-two"
    assert "clear_ask" in [name for name, _ in client.events]


def test_malformed_identity_is_never_answered(harness: Harness) -> None:
    """A connect without the 2.x auth payload hangs, as on Chainlit, and is logged as ignored."""
    server = harness.target()
    client = harness.client(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(headers={"X-Chainlit-Session-Id": "s-1x"}, wait_timeout=0.5)
    assert client.named("connect_error") == []
    assert server.handshakes()[-1]["outcome"] == "ignored"


def test_tokens_minted_with_the_shared_secret_are_accepted(harness: Harness) -> None:
    """A JWT from chainlit_auth.mint_jwt with the target's secret authenticates a connect."""
    pytest.importorskip("jwt")
    from supervisor.chainlit_auth import mint_jwt  # noqa: PLC0415 - needs the optional PyJWT

    server = harness.target(require_login=True, secret="x" * 40)
    token = mint_jwt("x" * 40, "carol")
    client = harness.client(server)
    client.connect(auth=auth("s-jwt"), headers={"Cookie": f"access_token={token}"})
    assert server.handshakes()[-1]["user"] == "carol"


# ---------------------------------------------------------------- 1.x identity, log, faults


def test_identity_style_1_reads_headers(harness: Harness) -> None:
    """The 1.x style reads identity from X-Chainlit-* headers and the token from Authorization."""
    server = harness.target(identity_style="1", require_login=True)
    status, headers, payload = post_login(server, "dave", "dave")
    assert status == 200
    assert "set-cookie" not in headers
    client = harness.client(server)
    client.connect(headers={
        "Authorization": f"Bearer {payload['access_token']}",
        "X-Chainlit-Client-Type": "webapp", "X-Chainlit-Session-Id": "s-1",
        "X-Chainlit-Thread-Id": "t-1x", "user-env": "{}"})
    assert client.turn("old style")["threadId"] == "t-1x"
    record = server.handshakes()[-1]
    assert (record["style"], record["user"], record["thread_id"]) == ("1", "dave", "t-1x")


def test_handshake_log_records_each_identity(tmp_path: Path, harness: Harness) -> None:
    """The JSON-lines log has one record per connect with its sessionId and threadId."""
    log = tmp_path / "handshakes.jsonl"
    server = harness.target(handshake_log=log)
    for session_id, thread_id in (("s-1", "t-1"), ("s-2", ""), ("s-1", "t-3")):
        client = harness.client(server)
        client.connect(auth=auth(session_id, thread_id))
        client.close()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["session_id"], r["thread_id"], r["outcome"]) for r in records] == [
        ("s-1", "t-1", "accepted"), ("s-2", None, "accepted"), ("s-1", "t-3", "restored")]
    assert records[2]["bound_thread_id"] == "t-1"
    assert len({r["sid"] for r in records}) == 3


def test_injected_refusal_and_drop(harness: Harness) -> None:
    """refuse_probability refuses connects; drop_probability cuts the socket with no goodbye."""
    server = harness.target(refuse_probability=1.0)
    client = harness.client(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(auth=auth("s-r"))
    assert client.named("connect_error") == [{"message": "injected refusal"}]
    server = harness.target(drop_probability=1.0, seed=7)
    client = harness.client(server)
    client.connect(auth=auth("s-drop"))
    client.turn("cut me")
    # "transport error": no Socket.IO (41) or Engine.IO (1) goodbye came first.
    assert client.wait_event("disconnect") == [("transport error",)]
    again = harness.client(server)
    again.connect(auth=auth("s-drop"))
    assert server.handshakes()[-1]["outcome"] == "restored"


def test_echo_endpoint_tags_frames_with_the_thread_header() -> None:
    """/ws/echo answers each text frame with JSON carrying the X-Chainlit-Thread-Id header."""
    with TargetServer() as server:
        ws = websocket.create_connection(f"{server.ws_url}/ws/echo", timeout=WAIT,
                                         header=["X-Chainlit-Thread-Id: t-echo"])
        try:
            ws.send("ping")
            assert json.loads(ws.recv()) == {"thread": "t-echo", "text": "ping"}
        finally:
            ws.close()


def test_echo_endpoint_faults() -> None:
    """/ws/echo is refused with HTTP 403 by refuse_probability and cut after a frame by drops."""
    with TargetServer(refuse_probability=1.0) as server:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"{server.ws_url}/ws/echo", timeout=WAIT)
        assert refused.value.status_code == 403
    with TargetServer(drop_probability=1.0) as server:
        ws = websocket.create_connection(f"{server.ws_url}/ws/echo", timeout=WAIT)
        try:
            ws.send("last words")
            assert json.loads(ws.recv())["text"] == "last words"
            opcode, frame = ws.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert int.from_bytes(frame[:2], "big") == 1011
        finally:
            ws.shutdown()


# ---------------------------------------------------------------- foreground process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_stops_cleanly_on_signal(signum: int) -> None:
    """serve_forever in a subprocess exits with status 0 on SIGTERM or SIGINT."""
    code = "import sys; from supervisor.target import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", "0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None
    assert stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=PROCESS_WAIT)
        assert line.startswith("supervisor target listening on http://")
        assert http_get(f"{line.split()[-1]}/health")[0] == 200
        proc.send_signal(signum)
        assert proc.wait(timeout=PROCESS_WAIT) == 0, stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()
        stderr.close()
