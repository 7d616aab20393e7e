"""The shared reactor (``_reactor``, ``_streams``): real sockets on loopback, one loop for all.

Most tests drive ``Connection`` directly with a report collector standing in for
the session actor; the thread-count test runs whole sessions. Classes marked
``concurrency`` also run under gevent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hostile_server import HostileServer, Peer, echo_handler, stall
from recording_server import RecordingServer
from support import EventLog, fast_policy, wait_until
from tls_certs import SelfSigned, make_self_signed

from supervisor import SessionSpec, Supervisor
from supervisor._actor_pool import shared_pool
from supervisor._admission import Admission
from supervisor._pollers import READ, WRITE, GeventPoller, SelectorPoller, make_poller
from supervisor._reactor import THREAD_NAME, reactor
from supervisor._reports import Ended, Opened, OpenFailed, Received, Report, Written
from supervisor._slice import YIELD_EVERY, TimeSlice
from supervisor._transport import Connection, TransportOptions
from supervisor.errors import ConnectionLost
from supervisor.protocols import Identity, make_codec

KIB = 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
GEVENT = os.environ.get("SUPERVISOR_TEST_RUNTIME") == "gevent"


class Reports:
    """Stands in for the session actor: collects a connection's reports, with their threads."""

    def __init__(self) -> None:
        self.items: list[Report] = []
        self.threads: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, report: Report) -> None:
        with self._cond:
            self.items.append(report)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Report]], bool], what: str,
             timeout: float = 10.0) -> list[Report]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                pytest.fail(f"timed out after {timeout}s waiting for {what}: {self.items!r}")
            return list(self.items)

    def of(self, kind: type[Any]) -> list[Any]:
        with self._cond:
            return [item for item in self.items if isinstance(item, kind)]

    def ended(self, timeout: float = 10.0) -> Ended:
        items = self.wait(lambda items: any(isinstance(i, Ended) for i in items), "Ended",
                          timeout)
        ended = [item for item in items if isinstance(item, Ended)]
        assert len(ended) == 1
        assert isinstance(items[-1], Ended), "Ended is the last report"
        return ended[0]


def connect(url: str, reports: Reports, **options: Any) -> Connection:
    """A started connection of the plain WebSocket protocol, once its upgrade succeeded."""
    codec = make_codec(SessionSpec(url=url).protocol_config, Identity(None))
    conn = Connection(codec, 1, reports, Admission(100, 1000.0), TransportOptions(**options))
    conn.start()
    reports.wait(lambda items: any(isinstance(i, Opened | OpenFailed) for i in items), "open")
    assert reports.of(Opened), reports.items
    return conn


def received(reports: Reports) -> list[str | bytes]:
    return [item.data for item in reports.of(Received)]


def frames_in(items: list[Report]) -> list[str | bytes]:
    return [item.data for item in items if isinstance(item, Received)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return make_self_signed(tmp_path_factory.mktemp("tls"), "server")


@pytest.mark.concurrency
class TestOneLoop:
    """Every open connection is served by the one loop; handshake threads end."""

    def test_many_connections_share_one_loop(self) -> None:
        """40 echo connections: every frame arrives on the reactor thread, no thread each."""
        count = 40
        with HostileServer(echo_handler) as server:
            pairs = [(reports := Reports(), connect(server.url(), reports))
                     for _ in range(count)]
            for index, (_, conn) in enumerate(pairs):
                conn.send(f"m{index}", token=index)
            for index, (reports, _conn) in enumerate(pairs):
                reports.wait(lambda items: any(isinstance(i, Received) for i in items), "echo")
                assert received(reports) == [f"m{index}"]
                assert [w.token for w in reports.of(Written)] == [index]
                reader = reports.threads[reports.items.index(reports.of(Received)[0])]
                assert reader == THREAD_NAME
            # Each handshake thread ends once its socket is handed to the loop.
            wait_until(lambda: not any(t.name.startswith("ws-gen")
                                       for t in threading.enumerate()),
                       what="the handshake threads to end")
            for reports, conn in pairs:
                conn.close()
                assert reports.ended().error is None
        loop = reactor().thread
        assert loop is not None
        assert loop.is_alive()

    def test_a_handler_that_raises_does_not_stop_the_loop(self) -> None:
        """A handler's exception is logged and the handler told; other connections go on."""
        crashed = threading.Event()

        class Broken:
            def ready(self, events: int) -> None:
                raise AssertionError

            def poked(self) -> None:
                raise RuntimeError("a bug in one handler")

            def timer(self, now: float) -> None:
                raise AssertionError

            def crashed(self, error: BaseException) -> None:
                assert isinstance(error, RuntimeError)
                crashed.set()

        reactor().poke(Broken())
        assert crashed.wait(5)
        with HostileServer(echo_handler) as server:
            reports = Reports()
            conn = connect(server.url(), reports)
            conn.send("still served")
            reports.wait(lambda items: bool(received(reports)), "the echo")
            conn.abort()
            assert reports.ended().error is None


@pytest.mark.concurrency
class TestReading:
    """One large read per readiness, paused without credit, resumed by consumed()."""

    def test_flood_pauses_reading_until_credit_comes_back(self) -> None:
        """At inbound_max_frames unconsumed the loop stops reading; consumed() resumes it."""
        stop = threading.Event()

        def flood(peer: Peer) -> None:
            _, headers = peer.read_request()
            peer.accept_upgrade(headers)
            batch = b"".join(bytes([0x81, 4]) + b"%04d" % i for i in range(1000))
            while not stop.is_set():
                peer.sock.sendall(batch)

        try:
            with HostileServer(flood) as server:
                reports = Reports()
                conn = connect(server.url(), reports, inbound_max_frames=20)
                reports.wait(lambda _: len(received(reports)) >= 20, "20 frames")
                wait_until(lambda: conn._paused, what="reading paused")
                assert len(received(reports)) == 20  # paused: nothing past the bound
                assert conn._decoder is not None
                assert conn._decoder.buffered <= 64 * KIB  # one read at most, held
                for frame in received(reports):
                    conn.consumed(len(frame))
                reports.wait(lambda _: len(received(reports)) >= 40, "20 more after credit")
                assert received(reports)[:40] == [f"{i:04d}" for i in range(40)]
                conn.close()
                assert reports.ended().error is None
        finally:
            stop.set()

    def test_credit_given_back_from_another_thread_never_strands_a_paused_connection(
            self) -> None:
        """The pause takes no lock: a consumer thread giving credit back while the loop
        pauses, frame after frame at a bound of one, still gets every frame (a lost
        wake-up would leave the connection paused for good, and this test timing out)."""
        total = 3000

        def burst(peer: Peer) -> None:
            _, headers = peer.read_request()
            peer.accept_upgrade(headers)
            peer.sock.sendall(b"".join(bytes([0x81, 5]) + b"%05d" % i for i in range(total)))
            peer.read_frame()  # until our close

        with HostileServer(burst) as server:
            reports = Reports()
            conn = connect(server.url(), reports, inbound_max_frames=1)
            consumer_done = threading.Event()

            def consume() -> None:  # as the session actor does, on a thread of its own
                handed = 0
                while handed < total:
                    items = reports.wait(
                        lambda items, after=handed: len(frames_in(items)) > after,
                        f"frame {handed + 1} of {total}")
                    for frame in frames_in(items)[handed:]:
                        conn.consumed(len(frame))
                        handed += 1
                consumer_done.set()

            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            assert consumer_done.wait(30), "the consumer stalled"
            consumer.join(10)
            assert received(reports) == [f"{i:05d}" for i in range(total)]
            assert conn.inbound_backlog == 0
            conn.close()
            assert reports.ended().error is None

    def test_frames_sent_with_the_upgrade_response_are_delivered(self) -> None:
        """Bytes read along with the 101 head (one server write) are the first frames."""
        def eager(peer: Peer) -> None:
            _, headers = peer.read_request()
            accept = base64.b64encode(hashlib.sha1(  # noqa: S324 - RFC 6455
                (headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
            head = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode()
            frames = b"".join(bytes([0x81, 5]) + b"early" for _ in range(3))
            peer.sock.sendall(head + frames)  # one write: head and frames together
            peer.read_frame()

        with HostileServer(eager) as server:
            reports = Reports()
            conn = connect(server.url(), reports)
            reports.wait(lambda _: len(received(reports)) == 3, "the three early frames")
            conn.close()
            assert reports.ended().error is None
        assert received(reports) == ["early"] * 3

    def test_peer_close_is_answered_and_ends_clean(self) -> None:
        """A server's close 1000 is answered with 1000; Ended is clean, without an error."""
        answers: list[tuple[int, bytes]] = []

        def closer(peer: Peer) -> None:
            _, headers = peer.read_request()
            peer.accept_upgrade(headers)
            peer.send_frame(b"bye")
            peer.send_frame((1000).to_bytes(2, "big"), 0x8)
            answers.append(peer.read_frame())

        with HostileServer(closer) as server:
            reports = Reports()
            connect(server.url(), reports)
            ended = reports.ended()
            wait_until(lambda: bool(answers), what="the close answer")
        assert (ended.error, ended.clean) == (None, True)
        assert received(reports) == ["bye"]
        assert answers == [(0x8, (1000).to_bytes(2, "big"))]


@pytest.mark.concurrency
class TestWriting:
    """Writes the socket cannot take wait in the bounded buffer; the loop enforces write_timeout."""

    def test_a_peer_that_stops_reading_trips_write_timeout(self) -> None:
        """Frames stall; the loop ends the connection past write_timeout, Ended after Written."""
        release = threading.Event()
        try:
            with HostileServer(stall(release)) as server:
                reports = Reports()
                conn = connect(server.url(), reports, write_timeout=0.5)
                for index in range(200):
                    conn.send(b"x" * (64 * KIB), token=index)
                ended = reports.ended(timeout=10)
        finally:
            release.set()
        assert isinstance(ended.error, ConnectionLost)
        assert "write stalled" in str(ended.error)
        tokens = [w.token for w in reports.of(Written)]
        assert tokens == list(range(len(tokens)))  # in order, each once
        assert len(tokens) < 200
        assert conn._live is not None
        assert conn._live.fileno() == -1  # closed by its last user

    def test_tls_round_trip_of_large_and_many_frames(self, certs: SelfSigned) -> None:
        """Over TLS a 3 MiB frame and 300 small ones go out and come back whole, in order."""
        with HostileServer(echo_handler, tls=certs.server_context()) as server:
            reports = Reports()
            conn = connect(server.url("wss"), reports, verify_tls=False)
            big = bytes(random.Random(7).randbytes(3 * 1024 * KIB))
            conn.send(big, token="big")
            for index in range(300):
                conn.send(f"t{index}", token=index)
            reports.wait(lambda _: len(received(reports)) == 301, "301 echoes", timeout=30)
            assert received(reports) == [big, *(f"t{i}" for i in range(300))]
            assert [w.token for w in reports.of(Written)] == ["big", *range(300)]
            conn.close()
            ended = reports.ended()
        assert ended.error is None


@pytest.mark.concurrency
class TestEndingRaces:
    """Close and abort race sends from other threads: one Ended, last, the socket closed once."""

    @pytest.mark.parametrize("how", ["close", "abort"])
    def test_ending_while_another_thread_sends(self, how: str) -> None:
        """Whatever the interleaving, each token is Written at most once and Ended comes last."""
        chance = random.Random(how)
        with HostileServer(echo_handler) as server:
            for _ in range(15):
                reports = Reports()
                conn = connect(server.url(), reports)
                go = threading.Event()
                cut = chance.randrange(60)

                def sender(conn: Connection = conn, go: threading.Event = go,
                           cut: int = cut) -> None:
                    for index in range(60):
                        if index == cut:
                            go.set()
                        conn.send(b"y" * (8 * KIB), token=index)

                thread = threading.Thread(target=sender)
                thread.start()
                assert go.wait(5)
                getattr(conn, how)()
                thread.join(5)
                ended = reports.ended()
                assert ended.error is None
                tokens = [w.token for w in reports.of(Written)]
                assert len(tokens) == len(set(tokens))
                assert tokens == sorted(tokens)
                assert conn._live is not None
                assert conn._live.fileno() == -1


THREADS_BESIDE_SESSIONS = 4
"""OS threads a supervisor runs whatever its sessions: its own actor, the timer
scheduler, the handshake-deadline thread and the reactor. Handshake threads come
on top while connecting, and end once their socket is handed to the reactor."""


@pytest.mark.skipif(GEVENT, reason="counts OS threads: the threads runtime only")
def test_threads_runtime_uses_one_thread_per_session(ws_server: RecordingServer) -> None:
    """N connected sessions use no thread each: the supervisor's own and the actor pool's
    (was 2N: an actor thread and a reader thread per session)."""
    count = 60
    before = threading.active_count()
    log = EventLog()
    with Supervisor.start(fast_policy()) as sup:
        sessions = [sup.open(SessionSpec(url=ws_server.url, on_event=log))
                    for _ in range(count)]
        for index, session in enumerate(sessions):
            session.send(f"hello {index}").get(timeout=20)
        log.wait_for_count(count, timeout=20)
        wait_until(lambda: not any(t.name.startswith("ws-gen") for t in threading.enumerate()),
                   what="the handshake threads to end")
        used = threading.active_count() - before
    # The process-wide ones (reactor, deadlines, actor pool) may predate this test.
    assert used <= THREADS_BESIDE_SESSIONS + shared_pool.core_workers + 1, used


@pytest.mark.skipif(GEVENT, reason="os.fork under gevent is gevent's own business")
def test_a_forked_child_starts_its_own_loop() -> None:
    """After fork the child's reactor is a fresh one, not the parent's thread-less copy."""
    parent = reactor()
    parent.poke(_Noop())
    assert parent.thread is not None
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns that the parent has threads: we know
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        fresh = reactor() is not parent and reactor().thread is None
        os.write(write_end, b"1" if fresh else b"0")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"1"


class _Noop:
    """A handler that does nothing (starts the loop)."""

    def ready(self, events: int) -> None:
        pass

    def poked(self) -> None:
        pass

    def timer(self, now: float) -> None:
        pass

    def crashed(self, error: BaseException) -> None:
        pass


@pytest.mark.concurrency
class TestPoller:
    """The reactor's poller (selectors; under gevent the hub) reports readiness."""

    def test_readiness_and_timeout(self) -> None:
        """Nothing ready: select waits out its timeout; then READ, WRITE; nothing once dropped."""
        poller = make_poller()
        assert isinstance(poller, GeventPoller if GEVENT else SelectorPoller)
        left, right = socket.socketpair()
        try:
            fd = left.fileno()
            poller.register(fd, READ)
            started = time.monotonic()
            assert poller.select(0.05) == []
            assert time.monotonic() - started >= 0.04
            right.send(b"x")
            assert poller.select(5) == [(fd, READ)]
            poller.modify(fd, WRITE)
            assert poller.select(5) == [(fd, WRITE)]
            poller.unregister(fd)
            assert poller.select(0.01) == []
        finally:
            left.close()
            right.close()


@pytest.mark.concurrency
@pytest.mark.skipif(not GEVENT, reason="how a greenlet yields to the hub: gevent only")
def test_a_slice_yields_to_greenlets_waiting_on_timers() -> None:
    """A busy worker's yield lets a greenlet whose timer fell due run at once.

    With ``sleep(0)`` the hub ran the yielding greenlet again from its callback
    queue and polled timers and I/O only every 50 callbacks: about 50 slices
    (100 ms) before an asyncio loop or a reader got its turn. Counted in slices,
    so a slow machine makes no difference.
    """
    woke = threading.Event()
    sleeper = threading.Thread(target=lambda: (time.sleep(0.001), woke.set()), daemon=True)
    sleeper.start()  # under gevent it is parked on its timer once start() returns
    busy = TimeSlice()
    slices_used = 0
    while not woke.is_set() and slices_used < 500:  # bounded: 500 slices of 2 ms
        spun_from = time.monotonic()
        while time.monotonic() - spun_from < YIELD_EVERY:
            pass  # CPU work that never waits
        busy.share()
        slices_used += 1
    assert woke.is_set()
    assert slices_used <= 3, f"the timer waited {slices_used} slices"
