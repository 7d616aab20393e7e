"""Self-tests for the recording WebSocket server and its fixtures."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import pytest
import websocket
from recording_server import RecordingServer, header_values
from websocket._handshake import CookieJar

THREAD_HEADER = "X-Chainlit-Thread-Id"


@contextlib.contextmanager
def connect(url: str, thread: str | None = None) -> Iterator[websocket.WebSocket]:
    """A websocket-client connection that is always released, even after a server kill."""
    headers = [f"{THREAD_HEADER}: {thread}"] if thread is not None else []
    ws = websocket.create_connection(url, header=headers, timeout=5)
    try:
        yield ws
    finally:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            ws.close(timeout=1)
        ws.shutdown()


@pytest.fixture
def isolated_cookie_jar() -> Iterator[None]:
    """Restore websocket-client's process-wide cookie jar so cookies don't leak to others."""
    saved = dict(CookieJar.jar)
    try:
        yield
    finally:
        CookieJar.jar.clear()
        CookieJar.jar.update(saved)


def test_handshake_headers_recorded(ws_server: RecordingServer) -> None:
    """Path, all headers (duplicates kept), thread id and outcome are recorded."""
    ws = websocket.create_connection(
        ws_server.url, header=[f"{THREAD_HEADER}: t-1", "X-Dup: a", "X-Dup: b"], timeout=5
    )
    ws.close()
    [hs] = ws_server.wait_for_handshakes(1)
    assert hs["path"] == "/ws"
    assert hs["thread"] == "t-1"
    assert header_values(hs, THREAD_HEADER) == ["t-1"]
    assert header_values(hs, "x-dup") == ["a", "b"]
    assert (hs["outcome"], hs["status"]) == ("accepted", 101)


def test_echo_is_tagged_with_thread(ws_server: RecordingServer) -> None:
    """Text frames come back as JSON tagged with thread and conn; binary verbatim."""
    with connect(ws_server.url, thread="t-2") as ws:
        ws.send("hello")
        reply = json.loads(ws.recv())
        ws.send_binary(b"\x00\x01")
        assert ws.recv() == b"\x00\x01"
    [hs] = ws_server.handshakes()
    assert reply == {"thread": "t-2", "conn": hs["conn"], "text": "hello"}


def test_configurable_thread_header(ws_server: RecordingServer) -> None:
    """set_thread_header changes which header names the thread."""
    ws_server.set_thread_header("X-Other")
    ws = websocket.create_connection(ws_server.url, header=["X-Other: t-9"], timeout=5)
    ws.close()
    assert ws_server.wait_for_handshakes(1)[0]["thread"] == "t-9"


def test_refusal_returns_status(ws_server: RecordingServer) -> None:
    """refuse(status, count) fails exactly the next `count` handshakes with that status."""
    ws_server.refuse(403, count=1)
    with pytest.raises(websocket.WebSocketBadStatusException) as excinfo:
        websocket.create_connection(ws_server.url, timeout=5)
    assert excinfo.value.status_code == 403
    with connect(ws_server.url):
        pass
    outcomes = [(h["outcome"], h["status"]) for h in ws_server.handshakes()]
    assert outcomes == [("refused", 403), ("accepted", 101)]


@pytest.mark.usefixtures("isolated_cookie_jar")
def test_set_cookie_in_response(ws_server: RecordingServer) -> None:
    """set_cookie adds a per-connection Set-Cookie with a Domain to accepted handshakes."""
    ws_server.set_cookie("sid")
    with connect(ws_server.url) as ws:
        cookie = ws.getheaders()["set-cookie"]
    [hs] = ws_server.handshakes()
    assert cookie == f"sid=v{hs['conn']}; Domain=127.0.0.1; Path=/"


def test_kill_all_drops_connection(ws_server: RecordingServer) -> None:
    """kill_all aborts live connections without a close frame; the client's recv raises."""
    with connect(ws_server.url, thread="t-k") as ws:
        killed = ws_server.kill_all()
        assert [k["thread"] for k in killed] == ["t-k"]
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.recv()
    assert ws_server.open_connections()["count"] == 0


def test_kill_thread_spares_others(ws_server: RecordingServer) -> None:
    """kill_thread drops only the named thread's connections."""
    with connect(ws_server.url, thread="a") as ws_a, connect(ws_server.url, thread="b") as ws_b:
        assert [k["thread"] for k in ws_server.kill_thread("a")] == ["a"]
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws_a.recv()
        ws_b.send("still here")
        assert json.loads(ws_b.recv())["thread"] == "b"
        assert ws_server.open_connections()["threads"] == ["b"]


def test_close_all_sends_close_code(ws_server: RecordingServer) -> None:
    """close_all performs a clean close with the chosen code."""
    with connect(ws_server.url) as ws:
        ws_server.close_all(code=4000)
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 4000


def test_hold_and_release(ws_server: RecordingServer) -> None:
    """A held handshake is logged as in flight and only completes after release."""
    ws_server.hold_handshakes()
    done = threading.Event()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with connect(ws_server.url, thread="held"):
                pass
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=client)
    worker.start()
    try:
        [hs] = ws_server.wait_for_handshakes(1)
        assert hs["outcome"] == "held"
        assert not done.is_set()
        assert ws_server.release_handshakes() == 1
        assert done.wait(timeout=5)
    finally:
        ws_server.release_handshakes()
        worker.join(timeout=5)
    assert errors == []
    assert ws_server.handshakes()[0]["outcome"] == "accepted"
