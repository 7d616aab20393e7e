"""Hostile and unhealthy peers (issue 8): each fault is a real server on loopback.

Every test asserts the typed outcome, the bound that held, and that no future
is left pending. Classes marked ``concurrency`` also run under gevent.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from hostile_server import HostileServer, Peer, echo_handler, stall
from support import EventLog, fast_policy, wait_until

from supervisor import (
    Lifecycle,
    LifecycleKind,
    OutboxFull,
    SessionFailed,
    SessionSpec,
    SessionStatus,
    Supervisor,
)
from supervisor._admission import Admission
from supervisor._callbacks import UserCallbacks
from supervisor._http import TlsOptions, lookup_chainlit_version
from supervisor._machine import SessionMachine
from supervisor._record import SessionRecord
from supervisor._reports import Opened, Received
from supervisor._session_actor import SessionActor
from supervisor._timer import Scheduler
from supervisor._transport import Connection, OpenFailed, TransportOptions, same_origin_target
from supervisor._wsclient import Deadlines
from supervisor.errors import (
    HandshakeError,
    HandshakeRedirected,
    HandshakeRefused,
    SupervisorError,
    SupervisorStopped,
)
from supervisor.messages import Send
from supervisor.protocols import Identity, make_codec

KIB = 1024


class Lifecycles:
    """Collects ``on_lifecycle`` reports; tests wait on it."""

    def __init__(self) -> None:
        self.items: list[Lifecycle] = []
        self._cond = threading.Condition()

    def __call__(self, item: Lifecycle) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, kind: LifecycleKind, timeout: float = 10.0) -> Lifecycle:
        with self._cond:
            assert self._cond.wait_for(
                lambda: any(i.kind is kind for i in self.items), timeout), self.items
            return next(i for i in self.items if i.kind is kind)


def settled(futures: list[pykka.Future[Any]], timeout: float) -> list[object]:
    """Each future's value or error, failing the test if one is still pending."""
    deadline = time.monotonic() + timeout
    outcomes: list[object] = []
    for future in futures:
        try:
            outcomes.append(future.get(timeout=max(0.0, deadline - time.monotonic())))
        except pykka.Timeout:
            pytest.fail(f"a future was still pending after {timeout}s")
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def redirect_to(location: str, status: int = 302) -> Any:
    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.sock.sendall(f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\n"
                          "Content-Length: 0\r\n\r\n".encode())
        peer.sock.recv(1)  # until the client hangs up
    return handler


def recording_echo(server_box: list[HostileServer]) -> Any:
    def handler(peer: Peer) -> None:
        target, headers = peer.read_request()
        server_box[0].record(target, headers)
        peer.accept_upgrade(headers)
        while True:
            opcode, payload = peer.read_frame()
            if opcode == 0x8:
                return
            peer.send_frame(payload, opcode)
    return handler


@pytest.fixture
def other_origin() -> Iterator[HostileServer]:
    """A server on another port (another origin) that records every request it gets."""
    box: list[HostileServer] = []
    with HostileServer(recording_echo(box)) as server:
        box.append(server)
        yield server


CREDENTIALS: dict[str, Any] = {"headers": {"Authorization": "Bearer SECRET-TOKEN-A"},
                               "cookies": {"sessionid": "COOKIE-A"}}


@pytest.mark.concurrency
class TestRedirects:
    """I10: no credential leaves its origin; redirects are refused unless same-origin opt-in."""

    def test_redirect_is_refused_by_default(self, other_origin: HostileServer) -> None:
        """A 302 to another origin fails the session, typed; the other origin sees nothing."""
        lifecycles = Lifecycles()
        with HostileServer(redirect_to(other_origin.url())) as server, \
                Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(), thread_id="t-1",
                                           on_lifecycle=lifecycles, **CREDENTIALS))
            with pytest.raises(SessionFailed, match="302"):
                session.resume("t-1").get(timeout=10)
            assert lifecycles.wait_for(LifecycleKind.LOST).error == "HandshakeRedirected"
            assert session.state().restarts == 0
        assert other_origin.connections == 0

    def test_refusal_carries_status_and_location(self, other_origin: HostileServer) -> None:
        """The transport reports a HandshakeRefused with the status and the Location."""
        reports: queue.Queue[Any] = queue.Queue()
        with HostileServer(redirect_to(other_origin.url("ws", "/x"), 307)) as server:
            codec = make_codec(SessionSpec(url=server.url()).protocol_config, Identity(None),
                               confirm_resume=False)
            connection = Connection(codec, 1, reports.put, Admission(10, 100.0),
                                    TransportOptions(connect_timeout=5))
            connection.start()
            outcome = [reports.get(timeout=10) for _ in range(2)][-1]
        assert isinstance(outcome, OpenFailed)
        assert isinstance(outcome.error, HandshakeRedirected)
        assert (outcome.error.status_code, outcome.error.location) == (
            307, other_origin.url("ws", "/x"))

    def test_opt_in_follows_same_origin(self) -> None:
        """follow_redirects=True follows a same-origin 308 and connects there."""
        box: list[HostileServer] = []
        echo = recording_echo(box)

        def handler(peer: Peer) -> None:
            target, headers = peer.read_request()
            if target == "/old":
                box[0].record(target, headers)
                peer.sock.sendall(b"HTTP/1.1 308 Moved\r\nLocation: /new\r\n\r\n")
                return
            peer.buffer = f"GET {target} HTTP/1.1\r\n".encode() + b"".join(
                f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n" + peer.buffer
            echo(peer)

        log = EventLog()
        with HostileServer(handler) as server, Supervisor.start(fast_policy()) as sup:
            box.append(server)
            session = sup.open(SessionSpec(url=server.url(path="/old"), follow_redirects=True,
                                           on_event=log, **CREDENTIALS))
            session.send("hello").get(timeout=10)
            assert log.wait_for_count(1)[0].data == "hello"
        assert [target for target, _ in server.requests] == ["/old", "/new"]

    def test_opt_in_never_crosses_origins(self, other_origin: HostileServer) -> None:
        """Even with follow_redirects=True, a redirect to another origin is refused."""
        with HostileServer(redirect_to(other_origin.url())) as server, \
                Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(), follow_redirects=True,
                                           **CREDENTIALS))
            with pytest.raises(SessionFailed, match="302"):
                session.resume(None).get(timeout=10)
        assert other_origin.connections == 0


@pytest.mark.parametrize(("current", "location", "expected"), [
    ("wss://h/a", "/b?x=1", "wss://h/b?x=1"),
    ("wss://h/a", "https://h/c", "wss://h/c"),
    ("wss://h/a", "ws://h/a", None),            # down from TLS
    ("wss://h/a", "http://h/a", None),          # down from TLS
    ("ws://h:1/a", "ws://h:2/a", None),         # another port
    ("ws://h/a", "ws://evil/a", None),          # another host
    ("ws://h/a", "//evil/a", None),             # scheme-relative, another host
    ("ws://h/a", "/b\r\nX-Evil: 1", None),      # header injection
    ("ws://h/a", "/b\x85", None),               # C1 control
    ("ws://h/a", "", None),
    ("ws://h/a", "http://[bad/x", None),       # unparsable: refused, not raised
])
def test_same_origin_target(current: str, location: str, expected: str | None) -> None:
    """A redirect is followable only within the same scheme, host and port."""
    assert same_origin_target(current, location) == expected


@pytest.mark.concurrency
class TestStalledPeer:
    """I9: a peer that stops reading costs its own session a bounded amount, never the actor."""

    def test_stalled_writes_fill_the_outbox_then_break_the_connection(self) -> None:
        """Sends past the bound fail with OutboxFull; the stall ends as ConnectionLost."""
        release = threading.Event()
        lifecycles = Lifecycles()
        try:
            with HostileServer(stall(release)) as server, \
                    Supervisor.start(fast_policy(max_restarts=0)) as sup:
                # 200 x 64 KiB is more than loopback's socket buffers absorb.
                session = sup.open(SessionSpec(url=server.url(), write_timeout=1.0,
                                               outbox_limit=200, on_lifecycle=lifecycles))
                session.resume(None).get(timeout=10)
                started = time.monotonic()
                futures = [session.send(b"x" * (64 * KIB)) for _ in range(400)]
                lost = lifecycles.wait_for(LifecycleKind.LOST, timeout=15)
                outcomes = settled(futures, timeout=10)
                took = time.monotonic() - started
        finally:
            release.set()
        assert lost.error == "ConnectionLost"
        assert "write stalled" in (lost.reason or "")
        full = sum(isinstance(o, OutboxFull) for o in outcomes)
        failed = sum(isinstance(o, SessionFailed) for o in outcomes)
        written = sum(o is None for o in outcomes)
        assert full > 0
        assert written + full + failed == 400
        assert 0 < failed <= 200  # the stalled ones, never more than the bound
        assert took < 10

    def test_state_resume_close_and_stop_answer_while_stalled(self) -> None:
        """With writes stalled, state(), resume(), close() and stop() answer in time."""
        release = threading.Event()
        try:
            with HostileServer(stall(release)) as server:
                sup = Supervisor.start(fast_policy())
                session = sup.open(SessionSpec(url=server.url(), thread_id="t-1",
                                               write_timeout=30.0, outbox_limit=100))
                other = sup.open(SessionSpec(url=server.url(), thread_id="t-9",
                                             write_timeout=30.0))
                session.resume("t-1").get(timeout=10)
                other.resume("t-9").get(timeout=10)
                sends = [session.send(b"x" * (64 * KIB)) for _ in range(400)]
                wait_until(lambda: session.state().outbox > 0, what="unwritten sends")
                started = time.monotonic()
                assert session.state().status is SessionStatus.CONNECTED
                state_took = time.monotonic() - started
                started = time.monotonic()
                session.resume("t-2").get(timeout=5)
                resume_took = time.monotonic() - started
                started = time.monotonic()
                session.close().get(timeout=5)
                close_took = time.monotonic() - started
                started = time.monotonic()
                sup.stop(timeout=5)
                stop_took = time.monotonic() - started
                outcomes = settled(sends, timeout=1)
        finally:
            release.set()
        assert state_took < 0.5
        assert resume_took < 3
        assert close_took < 3
        assert stop_took < 5
        assert not sup._ref.is_alive()
        assert all(o is None or isinstance(o, SupervisorError) for o in outcomes), outcomes


@pytest.mark.concurrency
class TestStoppedFromOutside:
    """One retirement path: an actor stopped by pykka still ends its session for good."""

    def test_stopping_the_actor_closes_the_session(self) -> None:
        """A session actor stopped directly publishes CLOSED and fails later commands."""
        with HostileServer(echo_handler) as server, Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(), thread_id="t-1"))
            session.resume("t-1").get(timeout=10)
            ref = session._record.ref
            assert ref is not None
            ref.stop(timeout=5)
            assert session.state().status is SessionStatus.CLOSED
            outcome = settled([session.send("late")], timeout=5)[0]
            assert isinstance(outcome, Exception)

    def test_a_crash_after_the_supervisor_died_ends_the_session(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No supervisor to start a successor: the crashed session's commands fail typed."""
        handle = SessionMachine.handle

        def crash_on_boom(machine: SessionMachine, event: Any, now: float) -> Any:
            if isinstance(event, Send) and event.data == "boom":
                raise RuntimeError("boom")
            return handle(machine, event, now)

        monkeypatch.setattr(SessionMachine, "handle", crash_on_boom)
        dead = pykka.ThreadingActor.start()
        dead.stop()
        scheduler = Scheduler()
        try:
            with HostileServer(echo_handler) as server:
                record = SessionRecord(SessionSpec(url=server.url(), thread_id="t-1"))
                ref = SessionActor.start(record, dead, Admission(10, 100.0), scheduler)
                record.adopt(ref)
                booms = [pykka.ThreadingFuture[Any]() for _ in range(2)]
                record.deliver(Send("boom", booms[0]))
                record.deliver(Send("boom", booms[1]))
                outcomes = settled(booms, timeout=5)
                ref.stop(timeout=5)  # crashed already: a no-op
        finally:
            scheduler.stop()
        assert all(isinstance(o, SupervisorStopped) for o in outcomes), outcomes
        assert record.snapshot.status is SessionStatus.CLOSED
        late: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        record.deliver(Send("late", late))
        assert isinstance(settled([late], timeout=1)[0], SupervisorStopped)

@pytest.mark.concurrency
class TestGracefulCloseWritesNothingTwice:
    """A Resume's graceful close drops frames it has not started: the next connection sends them."""

    def test_queued_sends_go_out_once_across_a_resume(self) -> None:
        """Sends queued behind a stalled write reach the server once, on the new connection."""
        second_up = threading.Event()
        lock = threading.Lock()
        order: list[int] = []
        texts: list[list[str]] = [[], []]

        def handler(peer: Peer) -> None:
            _, headers = peer.read_request()
            with lock:
                index = len(order)
                order.append(index)
            peer.accept_upgrade(headers)
            if index == 0:
                second_up.wait(30)  # not reading until the Resume's connection is up
            else:
                second_up.set()
            while True:
                opcode, payload = peer.read_frame()
                if opcode == 0x8:
                    return
                if opcode == 0x1:
                    texts[index].append(payload.decode())

        with HostileServer(handler) as server, Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(), thread_id="t-1",
                                           write_timeout=20.0))
            session.resume("t-1").get(timeout=10)
            big = session.send(b"x" * (32 * 1024 * KIB))  # stalls: the server is not reading
            small = [session.send(f"m{i}") for i in range(10)]
            wait_until(lambda: session.state().outbox == 11, what="the sends behind it")
            session.resume("t-2").get(timeout=10)
            outcomes = settled([big, *small], timeout=30)
            assert all(o is None for o in outcomes), outcomes
            session.close().get(timeout=10)
            wait_until(lambda: len(texts[1]) == 10, what="the sends on the new connection")
        assert texts[1] == [f"m{i}" for i in range(10)]
        assert texts[0] == []  # the old connection wrote none of them

    def test_an_effect_that_raises_still_lets_its_batch_settle(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Carrying out CONNECTED raises: the Resume resolved in that batch still resolves."""
        lifecycle = UserCallbacks.lifecycle

        def raise_on_t2(callbacks: UserCallbacks, log: Any, report: Lifecycle) -> None:
            if report.kind is LifecycleKind.CONNECTED and report.thread_id == "t-2":
                raise RuntimeError("carrying out an effect failed")
            lifecycle(callbacks, log, report)

        monkeypatch.setattr(UserCallbacks, "lifecycle", raise_on_t2)
        with HostileServer(echo_handler) as server, Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(), thread_id="t-1"))
            session.resume("t-1").get(timeout=10)
            result = settled([session.resume("t-2")], timeout=10)[0]
            assert getattr(result, "thread_id", None) == "t-2", result

def flood(stop: threading.Event, frame_bytes: int = KIB) -> Any:
    """Answer the upgrade, then send text frames as fast as TCP lets it."""
    def handler(peer: Peer) -> None:
        _, headers = peer.read_request()
        peer.accept_upgrade(headers)
        payload = b"f" * frame_bytes
        batch = b"".join([bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload] * 64)
        while not stop.is_set():
            peer.sock.sendall(batch)
    return handler


@pytest.mark.concurrency
class TestFlood:
    """I9: a flooding server is held back by TCP once the session's inbound bound is full."""

    def test_inbound_backlog_stays_bounded_and_close_answers(self) -> None:
        """The mailbox never holds more than inbound_max_frames frames; close() is prompt."""
        stop = threading.Event()
        slow = threading.Event()

        def slow_consumer(_event: Any) -> None:
            slow.wait(0.002)  # a consumer slower than the network

        log = EventLog(on_each=slow_consumer)
        try:
            with HostileServer(flood(stop)) as server, Supervisor.start(fast_policy()) as sup:
                session = sup.open(SessionSpec(url=server.url(), on_event=log,
                                               inbound_max_frames=50))
                session.resume(None).get(timeout=10)
                backlogs = []
                for count in range(200, 1200, 200):
                    log.wait_for_count(count, timeout=30)
                    backlogs.append(session.state().inbound_backlog)
                    inbox = session._record.ref._actor_weakref().actor_inbox  # type: ignore[union-attr]
                    assert inbox.qsize() <= 50 + 5
                started = time.monotonic()
                session.close().get(timeout=5)
                close_took = time.monotonic() - started
        finally:
            stop.set()
        assert max(backlogs) <= 50
        assert max(backlogs) > 0  # the bound was reached: the reader really paused
        assert close_took < 2

    def test_inbound_byte_credit_is_returned_in_the_units_it_was_taken(self) -> None:
        """Multi-byte text: the backlog counts exactly the frames not yet consumed."""
        text = "\u00e9" * 100  # 100 characters, 200 bytes of UTF-8
        first = threading.Event()
        all_read = threading.Event()
        entered = threading.Event()
        release = threading.Event()
        seen: list[Any] = []

        def handler(peer: Peer) -> None:
            _, headers = peer.read_request()
            peer.accept_upgrade(headers)
            for _ in range(3):
                peer.send_frame(text.encode())
            peer.read_frame()

        def on_event(event: Any) -> None:
            seen.append(event)
            if len(seen) == 1:  # hold frame 1 until frames 2 and 3 are counted too
                first.set()
                all_read.wait(10)
            if len(seen) == 2:
                entered.set()
                release.wait(10)

        with HostileServer(handler) as server, Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(), on_event=on_event))
            try:
                assert first.wait(10)
                wait_until(lambda: session.state().inbound_backlog == 3, what="3 frames read")
                assert session.state().inbound_backlog_bytes == 3 * len(text)
                all_read.set()
                assert entered.wait(10)
                # Frame 1 consumed; frames 2 (in the callback) and 3 are not.
                wait_until(lambda: session.state().inbound_backlog == 2, what="frame 3 read")
                assert session.state().inbound_backlog_bytes == 2 * len(text)
            finally:
                all_read.set()
                release.set()
            wait_until(lambda: session.state().inbound_backlog == 0, what="all consumed")
            assert session.state().inbound_backlog_bytes == 0


def huge_after_hello(fragments: bool, closes: list[tuple[int, bytes]]) -> Any:
    """On the client's first frame, announce a message far over the client's bound."""
    def handler(peer: Peer) -> None:
        _, headers = peer.read_request()
        peer.accept_upgrade(headers)
        peer.read_frame()
        if fragments:
            peer.send_frame(b"a" * (600 * KIB), fin=False)
            peer.send_frame(b"", 0x0, announce=600 * KIB)  # a continuation over the bound
        else:
            peer.send_frame(b"only-the-start", announce=50 * 1024 * KIB)
        closes.append(peer.read_frame())
    return handler


@pytest.mark.concurrency
class TestSizeLimit:
    """I9: a message over max_message_bytes ends the connection on its header, typed, counted."""

    @pytest.mark.parametrize("fragments", [False, True], ids=["one-frame", "fragments"])
    def test_oversized_message_ends_the_connection(self, fragments: bool) -> None:
        """The announced size alone ends it with MessageTooBig and close code 1009."""
        closes: list[tuple[int, bytes]] = []
        lifecycles = Lifecycles()
        with HostileServer(huge_after_hello(fragments, closes)) as server, \
                Supervisor.start(fast_policy(max_restarts=0)) as sup:
            session = sup.open(SessionSpec(url=server.url(), max_message_bytes=1024 * KIB,
                                           on_lifecycle=lifecycles))
            session.send("hello").get(timeout=10)
            lost = lifecycles.wait_for(LifecycleKind.LOST)
            lifecycles.wait_for(LifecycleKind.FAILED)
            assert lost.error == "MessageTooBig"
            assert session.state().oversized_messages == 1
            wait_until(lambda: bool(closes), what="the close frame at the server")
        assert closes[0] == (0x8, (1009).to_bytes(2, "big"))

    @pytest.mark.parametrize("frames", [
        [(b"a", 0x1, False), (b"b", 0x1, True)],     # a new message inside a fragmented one
        [(b"x", 0x0, True)],                          # a continuation of nothing
        [(b"x", 0x3, True)],                          # a reserved opcode
        [(b"x", 0x9, False)],                         # a fragmented ping
    ], ids=["interleaved", "orphan-continuation", "opcode", "fragmented-ping"])
    def test_broken_framing_ends_the_connection(self, frames: list[Any]) -> None:
        """A framing violation ends the connection with ConnectionLost and close code 1002."""
        closes: list[tuple[int, bytes]] = []

        def handler(peer: Peer) -> None:
            _, headers = peer.read_request()
            peer.accept_upgrade(headers)
            peer.read_frame()
            for payload, opcode, fin in frames:
                peer.send_frame(payload, opcode, fin=fin)
            closes.append(peer.read_frame())

        lifecycles = Lifecycles()
        with HostileServer(handler) as server, \
                Supervisor.start(fast_policy(max_restarts=0)) as sup:
            session = sup.open(SessionSpec(url=server.url(), on_lifecycle=lifecycles))
            session.send("hello").get(timeout=10)
            lost = lifecycles.wait_for(LifecycleKind.LOST)
            assert lost.error == "ConnectionLost"
            assert "protocol violation" in (lost.reason or "")
            wait_until(lambda: bool(closes), what="the close frame at the server")
        assert closes[0] == (0x8, (1002).to_bytes(2, "big"))

    @pytest.mark.parametrize("opcode", [0x9, 0xA, 0x3, 0xB], ids=["ping", "pong", "reserved-data",
                                                                "reserved-control"])
    def test_huge_control_frame_is_refused_on_its_header(self, opcode: int) -> None:
        """A non-data frame announcing 2**40 bytes ends the connection on its header (1002)."""
        closes: list[tuple[int, bytes]] = []
        sent = threading.Event()

        def handler(peer: Peer) -> None:
            _, headers = peer.read_request()
            peer.accept_upgrade(headers)
            peer.read_frame()
            # The header and a few payload bytes; the rest is never sent, so a
            # reader that waits for the payload would hang until the test fails.
            peer.send_frame(b"x" * 64, opcode, announce=1 << 40)
            sent.set()
            closes.append(peer.read_frame())

        lifecycles = Lifecycles()
        with HostileServer(handler) as server, \
                Supervisor.start(fast_policy(max_restarts=0)) as sup:
            session = sup.open(SessionSpec(url=server.url(), on_lifecycle=lifecycles))
            session.send("hello").get(timeout=10)
            lost = lifecycles.wait_for(LifecycleKind.LOST)
            # The loss can be reported before the server's thread, done writing, gets
            # to set the flag: wait for it (bounded), never read it at once.
            assert sent.wait(10)
            assert lost.error == "ConnectionLost"
            assert "control frame carries at most 125" in (lost.reason or "")
            wait_until(lambda: bool(closes), what="the close frame at the server")
        assert closes[0] == (0x8, (1002).to_bytes(2, "big"))


def trickle(stop: threading.Event, interval: float = 0.2) -> Any:
    """Answer any request one byte at a time, never finishing the head."""
    def handler(peer: Peer) -> None:
        peer.read_request()
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 999:
            if stop.wait(interval):
                return
            peer.sock.sendall(bytes([byte]))
    return handler


@pytest.mark.concurrency
class TestDeadlineThread:
    """The one thread that runs every handshake deadline survives a callback that raises."""

    def test_a_raising_callback_does_not_stop_later_deadlines(self) -> None:
        """A callback raising is logged and dropped; the next deadline still fires."""
        deadlines = Deadlines()
        fired = threading.Event()

        def broken() -> bool:
            raise RuntimeError("broken deadline callback")

        def later() -> bool:
            fired.set()
            return False

        now = time.monotonic()
        deadlines.watch(now, broken)
        deadlines.watch(now + 0.05, later)
        assert fired.wait(5)
        assert deadlines._callbacks == {}

@pytest.mark.concurrency
class TestHandshakeDeadline:
    """I9: the whole handshake, version detection included, fits in connect_timeout."""

    @pytest.mark.parametrize("protocol", ["websocket", "chainlit"])
    def test_trickling_server_is_cut_at_the_connect_timeout(self, protocol: str) -> None:
        """A trickled upgrade or GET /user fails in time and frees the admission slot."""
        stop = threading.Event()
        try:
            with HostileServer(trickle(stop)) as slow, HostileServer(echo_handler) as healthy, \
                    Supervisor.start(fast_policy(max_restarts=0,
                                                 max_handshakes_in_flight=1)) as sup:
                scheme = "ws" if protocol == "websocket" else "http"
                doomed = sup.open(SessionSpec(url=slow.url(scheme), protocol=protocol,  # type: ignore[arg-type]
                                              connect_timeout=1.0))
                started = time.monotonic()
                with pytest.raises(SessionFailed, match="within"):
                    doomed.resume(None).get(timeout=10)
                took = time.monotonic() - started
                fine = sup.open(SessionSpec(url=healthy.url()))
                fine.resume(None).get(timeout=10)
        finally:
            stop.set()
        assert took < 3

    def test_close_aborts_version_detection(self) -> None:
        """close() during a trickled GET /user answers at once and releases the slot."""
        stop = threading.Event()
        try:
            with HostileServer(trickle(stop)) as slow, HostileServer(echo_handler) as healthy, \
                    Supervisor.start(fast_policy(max_handshakes_in_flight=1)) as sup:
                doomed = sup.open(SessionSpec(url=slow.url("http"), protocol="chainlit",
                                              connect_timeout=60.0))
                wait_until(lambda: slow.connections == 1, what="the version lookup")
                started = time.monotonic()
                doomed.close().get(timeout=5)
                assert time.monotonic() - started < 1
                fine = sup.open(SessionSpec(url=healthy.url()))
                fine.resume(None).get(timeout=5)  # far less than the 60 s connect timeout
        finally:
            stop.set()


def open_once(url: str, timeout: float = 5.0) -> OpenFailed | Any:
    """One transport connect; its last report (OpenFailed or Opened)."""
    reports: queue.Queue[Any] = queue.Queue()
    codec = make_codec(SessionSpec(url=url).protocol_config, Identity(None),
                       confirm_resume=False)
    connection = Connection(codec, 1, reports.put, Admission(10, 100.0),
                            TransportOptions(connect_timeout=timeout))
    connection.start()
    try:
        return [reports.get(timeout=timeout + 5) for _ in range(2)][-1]
    finally:
        connection.abort()


class Capture:
    """A stand-in socket that keeps what is sent to it."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class TestUpgradeResponseBound:
    """I9: the upgrade response is read up to a bound, its head and a refusal's body alike."""

    @pytest.mark.parametrize(("opening", "filler"), [
        (b"", b"X-Junk: " + b"j" * 1000 + b"\r\n"),  # header lines without end
        (b"X-Junk: ", b"j" * 1000),  # one header line without end
    ], ids=["endless lines", "endless line"])
    def test_endless_upgrade_head_is_refused_at_the_bound(self, opening: bytes,
                                                          filler: bytes) -> None:
        """A head without end fails the handshake typed, long before connect_timeout."""
        stop = threading.Event()

        def endless(peer: Peer) -> None:
            peer.read_request()
            peer.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n" + opening)
            while not stop.is_set():
                peer.sock.sendall(filler)

        try:
            with HostileServer(endless) as server:
                started = time.monotonic()
                outcome = open_once(server.url(), timeout=30.0)
                took = time.monotonic() - started
        finally:
            stop.set()
        assert isinstance(outcome, OpenFailed)
        assert isinstance(outcome.error, HandshakeError)
        assert "upgrade response over" in str(outcome.error)
        assert took < 10

    def test_head_and_first_frame_byte_by_byte(self) -> None:
        """The head split anywhere, a frame right behind it: opened, and the frame delivered."""
        def dribble(peer: Peer) -> None:
            _, headers = peer.read_request()
            accepted = Peer.__new__(Peer)  # capture what accept_upgrade and send_frame write
            accepted.sock = Capture()
            accepted.accept_upgrade(headers)
            accepted.send_frame(b"first")
            for byte in accepted.sock.data:
                peer.sock.sendall(bytes([byte]))
            peer.sock.recv(1)

        reports: queue.Queue[Any] = queue.Queue()
        with HostileServer(dribble) as server:
            codec = make_codec(SessionSpec(url=server.url()).protocol_config, Identity(None),
                               confirm_resume=False)
            connection = Connection(codec, 1, reports.put, Admission(10, 100.0),
                                    TransportOptions(connect_timeout=10.0))
            connection.start()
            try:
                seen = [reports.get(timeout=15)]
                while not isinstance(seen[-1], Received | OpenFailed):
                    seen.append(reports.get(timeout=15))
            finally:
                connection.abort()
        assert any(isinstance(report, Opened) for report in seen), seen
        assert seen[-1].data == "first", seen

    def test_refusal_keeps_its_status_and_a_bounded_body(self) -> None:
        """A 403 with a 20 KiB body: HandshakeRefused(403), body cut to 1 KiB."""
        def forbidden(peer: Peer) -> None:
            peer.read_request()
            body = b"b" * (20 * KIB)
            peer.sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\n\r\n" + body)
            peer.sock.recv(1)

        with HostileServer(forbidden) as server:
            outcome = open_once(server.url())
        assert isinstance(outcome, OpenFailed)
        assert isinstance(outcome.error, HandshakeRefused)
        assert outcome.error.status_code == 403
        assert outcome.error.body == b"b" * KIB

    def test_refusal_announcing_a_huge_body_is_cut_at_the_bound(self) -> None:
        """A 500 announcing 10 GB is not read to its end: a typed error at the bound."""
        stop = threading.Event()

        def huge(peer: Peer) -> None:
            peer.read_request()
            peer.sock.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 10000000000\r\n\r\n")
            while not stop.is_set():
                peer.sock.sendall(b"x" * (64 * KIB))

        try:
            with HostileServer(huge) as server:
                outcome = open_once(server.url(), timeout=30.0)
        finally:
            stop.set()
        assert isinstance(outcome, OpenFailed)
        assert isinstance(outcome.error, HandshakeError)
        assert "upgrade response over" in str(outcome.error)

class TestVersionLookup:
    """Chainlit version detection: bounded, cached per origin and TLS options."""

    def test_lookup_is_cached_per_origin(self) -> None:
        """Two lookups of one origin make one request; an HTML answer means 1.x."""
        def html(peer: Peer) -> None:
            peer.read_request()
            peer.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>")

        with HostileServer(html) as server:
            base = server.url("http")
            first = lookup_chainlit_version(base, time.monotonic() + 5, TlsOptions(),
                                            lambda _s: None)
            again = lookup_chainlit_version(base + "/", time.monotonic() + 5, TlsOptions(),
                                            lambda _s: None)
            assert (first, again, server.connections) == ("1", "1", 1)

    def test_lookup_refuses_a_redirect(self) -> None:
        """GET /user answered with a redirect is a typed refusal, not followed."""
        with HostileServer(redirect_to("http://127.0.0.1:1/elsewhere")) as server, \
                pytest.raises(HandshakeRedirected):
            lookup_chainlit_version(server.url("http"), time.monotonic() + 5, TlsOptions(),
                                    lambda _s: None)

    def test_lookup_bounds_the_response_head(self) -> None:
        """An endless response head is refused past its bound, well before the deadline."""
        stop = threading.Event()

        def endless(peer: Peer) -> None:
            peer.read_request()
            peer.sock.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                peer.sock.sendall(b"X-Junk: " + b"j" * 1000 + b"\r\n")

        try:
            with HostileServer(endless) as server, \
                    pytest.raises(HandshakeError, match="head over"):
                lookup_chainlit_version(server.url("http"), time.monotonic() + 10,
                                        TlsOptions(), lambda _s: None)
        finally:
            stop.set()

    @pytest.mark.parametrize("status", [b"\xb2\xb2\xb2", b"2000", b"20", b"+20"],
                             ids=["superscript", "four-digits", "two-digits", "sign"])
    def test_lookup_refuses_a_status_that_is_not_three_digits(self, status: bytes) -> None:
        """A status line without exactly three ASCII digits is a HandshakeError, typed."""
        def odd(peer: Peer) -> None:
            peer.read_request()
            peer.sock.sendall(b"HTTP/1.1 " + status + b" OK\r\nContent-Length: 0\r\n\r\n")
            peer.sock.recv(1)

        with HostileServer(odd) as server, pytest.raises(HandshakeError, match="not an HTTP"):
            lookup_chainlit_version(server.url("http"), time.monotonic() + 5, TlsOptions(),
                                    lambda _s: None)
