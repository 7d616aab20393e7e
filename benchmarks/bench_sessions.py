"""Sessions/s, resumes/s, messages/s and memory per session, against a floor and a peer.

Each candidate opens N sessions to a loopback echo server, waits until all are
connected, resumes every one once to a new thread id (a new connection whose
handshake carries the new ``X-Chainlit-Thread-Id``), then sends one message on
each and waits for every echo. Candidates:

- ``supervisor``: this library (``Supervisor`` + ``SessionSpec``), threads or gevent;
- ``floor``: raw ``websocket.create_connection``, one thread (or greenlet) per
  session doing the same open, reconnect-with-new-header, send+recv sequence;
- ``socketio``: python-socketio's ``AsyncClient`` against a python-socketio
  echo server, resume modelled as disconnect + connect with new ``auth``.

Runner (what you call; prints a Markdown table)::

    python benchmarks/bench_sessions.py --sizes 1000,5000 --repeat 3

Each run gets a fresh echo server process and a fresh client process, so the
client's RSS is its own and gevent's monkey-patching never leaks into another
run. The client process is re-entered with ``--child`` (internal).
"""

from __future__ import annotations

import sys


def _gevent_requested(argv: list[str]) -> bool:
    """True for a child process asked to run on gevent; read before any other import."""
    if "--child" not in argv:
        return False
    for index, arg in enumerate(argv):
        if arg == "--runtime" and index + 1 < len(argv):
            return argv[index + 1] == "gevent"
        if arg.startswith("--runtime="):
            return arg == "--runtime=gevent"
    return False


if __name__ == "__main__" and _gevent_requested(sys.argv):
    # patch_all() must run before anything imports threading, socket, ssl or
    # time, or those modules keep blocking the whole process (DESIGN.md, Runtimes).
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402 - imported after the gevent patch, on purpose
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import faulthandler  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import select  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from fd_limit import raise_fd_limit  # noqa: E402

if TYPE_CHECKING:
    import pykka
    import websocket

    from supervisor import Event, Lifecycle, ResumeResult, Session, Supervisor

HERE = Path(__file__).resolve().parent
THREAD_HEADER = "X-Chainlit-Thread-Id"
CANDIDATES = ("supervisor", "floor", "socketio")
RUNTIMES = ("threads", "gevent")
MAX_ERRORS_KEPT = 5


# --- shared helpers ---------------------------------------------------------------




def proc_status(key: str) -> int:
    """One numeric field of /proc/self/status (``VmRSS`` is in KiB, ``Threads`` a count)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    msg = f"{key} not in /proc/self/status"
    raise KeyError(msg)


def thread_of(index: int, generation: int) -> str:
    return f"t{index}-{generation}"


def check_echo(raw: Any, index: int, connection_thread: str | None) -> str | None:
    """Why an echo is wrong (thread or text not the ones expected), or None if it is right."""
    expected = thread_of(index, 1)
    payload = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(payload, dict):
        return f"session {index}: echo is not an object: {raw!r}"
    if payload.get("thread") != expected or connection_thread not in (None, expected):
        return (f"session {index}: echo for thread {payload.get('thread')!r} on a connection "
                f"for {connection_thread!r}, expected {expected!r}")
    if payload.get("text") != f"m{index}":
        return f"session {index}: echo text {payload.get('text')!r}, expected 'm{index}'"
    return None


class Countdown:
    """Counts N outcomes reported from any thread or greenlet; the waiter never polls.

    The success path takes no lock: with 10,000 threads, one lock shared by
    every session turns into a convoy (a holder loses the GIL before it
    releases) and the benchmark would measure itself. ``list.append``,
    ``set.add`` and ``next()`` on ``itertools.count`` are each atomic under the
    GIL, and one session's reports come from one thread, so the per-key
    check-then-add does not race.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.errors: Counter[str] = Counter()
        self._oks: list[bool] = []
        self._fails: list[bool] = []
        self._seen: set[str] = set()
        self._finished = itertools.count(1)
        self._errors_lock = threading.Lock()
        self._done = threading.Event()
        if total <= 0:
            self._done.set()

    @property
    def ok(self) -> int:
        return len(self._oks)

    @property
    def failed(self) -> int:
        return len(self._fails)

    @property
    def finished(self) -> int:
        return len(self._oks) + len(self._fails)

    def _first(self, key: str | None) -> bool:
        if key is None:
            return True
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def hit(self, key: str | None = None) -> None:
        """One success; with ``key``, only the first report for that key counts."""
        if self._first(key):
            self._oks.append(True)
            self._count()

    def fail(self, why: str, key: str | None = None) -> None:
        if self._first(key):
            with self._errors_lock:
                # Keep kinds, not every message: 5,000 identical errors say one thing.
                self.errors[why[:160]] += 1
            self._fails.append(True)
            self._count()

    def _count(self) -> None:
        if next(self._finished) >= self.total:
            self._done.set()

    def wait_until(self, deadline: float) -> bool:
        """True once every outcome is in; False if ``deadline`` (monotonic) passes first."""
        return self._done.wait(max(0.0, deadline - time.monotonic()))


@dataclass
class PhaseOutcome:
    """How one phase ended: its duration and outcomes, or how far it got before its timeout."""

    seconds: float
    ok: int
    failed: int
    timed_out: bool
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, countdown: Countdown, seconds: float, finished: bool) -> PhaseOutcome:
        return cls(seconds, countdown.ok, countdown.failed, not finished,
                   dict(countdown.errors.most_common(MAX_ERRORS_KEPT)))


@dataclass
class Result:
    """One run of one candidate in one runtime at one N (the child's JSON answer)."""

    candidate: str
    runtime: str
    n: int
    status: str = "ok"
    sessions_per_s: float | None = None
    resumes_per_s: float | None = None
    messages_per_s: float | None = None
    rss_kib_per_session: float | None = None
    rss_before_kib: int = 0
    rss_connected_kib: int = 0
    rss_end_kib: int = 0
    os_threads_connected: int = 0
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Candidate:
    """The three phases a client under test runs; each returns once done or at ``deadline``."""

    def open_all(self, deadline: float) -> tuple[Countdown, bool]:
        raise NotImplementedError

    def resume_all(self, deadline: float) -> tuple[Countdown, bool]:
        raise NotImplementedError

    def send_all(self, deadline: float) -> tuple[Countdown, bool]:
        raise NotImplementedError

    def close_all(self, timeout: float) -> dict[str, Any]:
        """Close everything (bounded); answer extra diagnostics for the report."""
        raise NotImplementedError


# --- candidate: this library ----------------------------------------------------------


class SupervisorCandidate(Candidate):
    """N supervised sessions; identity checked on every echo."""

    def __init__(self, url: str, n: int, in_flight: int, per_second: float,
                 connect_timeout: float) -> None:
        from supervisor import (  # noqa: PLC0415 - child-only import
            LifecycleKind,
            RestartPolicy,
            Supervisor,
        )

        self.url, self.n = url, n
        self.connect_timeout = connect_timeout
        self.policy = RestartPolicy(max_handshakes_in_flight=in_flight,
                                    max_handshakes_per_second=per_second)
        self.sup: Supervisor = Supervisor.start(policy=self.policy)
        self.sessions: list[Session] = []
        self.connected = Countdown(n)
        self.echoes: Countdown | None = None
        self.unexpected_events = 0
        self._connected_kind = LifecycleKind.CONNECTED
        self._failed_kind = LifecycleKind.FAILED
        self._lost_kind = LifecycleKind.LOST
        self.losses: list[str | None] = []
        """Why connections were lost (list.append is atomic: no lock on the hot path)."""

    def _on_lifecycle(self, change: Lifecycle) -> None:
        if change.kind is self._connected_kind:
            self.connected.hit(change.session_id)
        elif change.kind is self._failed_kind:
            self.connected.fail(f"failed: {change.reason}", change.session_id)
        elif change.kind is self._lost_kind:
            self.losses.append(change.reason)

    def _on_event(self, event: Event) -> None:
        echoes = self.echoes
        if echoes is None:
            self.unexpected_events += 1  # should stay 0; a lost increment would not matter
            return
        index = int(event.session_id[1:])
        try:
            wrong = check_echo(event.data, index, event.thread_id)
        except ValueError as exc:
            wrong = f"session {index}: bad echo {exc}"
        if wrong is None:
            echoes.hit(event.session_id)
        else:
            echoes.fail(wrong, event.session_id)

    def open_all(self, deadline: float) -> tuple[Countdown, bool]:
        from supervisor import SessionSpec  # noqa: PLC0415 - child-only import

        self.sessions = [
            self.sup.open(SessionSpec(url=self.url, protocol="websocket",
                                      thread_id=thread_of(index, 0), session_id=f"s{index}",
                                      connect_timeout=self.connect_timeout,
                                      on_event=self._on_event, on_lifecycle=self._on_lifecycle))
            for index in range(self.n)
        ]
        return self.connected, self.connected.wait_until(deadline)

    def resume_all(self, deadline: float) -> tuple[Countdown, bool]:
        import pykka  # noqa: PLC0415 - child-only import

        resumed = Countdown(self.n)
        # The phase's own deadline, not resume_timeout's 30 s: N resumes queue for
        # admission together, and the phase measures how fast they get through.
        budget = max(1.0, deadline - time.monotonic())
        futures: list[pykka.Future[ResumeResult]] = [
            session.resume(thread_of(index, 1), timeout=budget)
            for index, session in enumerate(self.sessions)]
        for index, future in enumerate(futures):
            try:
                result = future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                return resumed, False
            except Exception as exc:
                resumed.fail(f"{type(exc).__name__}: {exc}")
                continue
            if result.superseded or result.thread_id != thread_of(index, 1):
                resumed.fail(f"unexpected resume result {result!r}")
            else:
                resumed.hit()
        return resumed, True

    def send_all(self, deadline: float) -> tuple[Countdown, bool]:
        import pykka  # noqa: PLC0415 - child-only import

        self.echoes = echoes = Countdown(self.n)
        writes = [session.send(f"m{index}") for index, session in enumerate(self.sessions)]
        finished = echoes.wait_until(deadline)
        # Write failures would show up as missing echoes; name them, outside the timing.
        for write in writes:
            try:
                write.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                break
            except Exception as exc:
                echoes.errors[f"send failed: {type(exc).__name__}: {exc}"[:160]] += 1
        return echoes, finished

    def close_all(self, timeout: float) -> dict[str, Any]:
        from supervisor import SessionStatus  # noqa: PLC0415 - child-only import

        connected = SessionStatus.CONNECTED
        states = [session.state() for session in self.sessions]
        started = time.monotonic()
        self.sup.stop(timeout=timeout)
        return {
            "policy": {"max_handshakes_in_flight": self.policy.max_handshakes_in_flight,
                       "max_handshakes_per_second": self.policy.max_handshakes_per_second},
            "handshakes": sum(state.handshakes for state in states),
            "restarts": sum(state.restarts for state in states),
            "stale_frames_dropped": sum(state.stale_frames_dropped for state in states),
            "not_connected": sum(state.status is not connected for state in states),
            "losses": len(self.losses),
            "loss_reasons": dict(Counter(self.losses).most_common(3)),
            "unexpected_events": self.unexpected_events,
            "stop_s": round(time.monotonic() - started, 3),
        }


# --- candidate: the floor (raw websocket-client) ------------------------------------------


class FloorCandidate(Candidate):
    """One thread (a greenlet under gevent) per session running the sequence with blocking calls.

    It is the least work that does the same thing: no actor, no mailbox, no
    futures. Handshakes go through the same in-flight limit as the library's
    admission control, so neither side floods the server's listen backlog.
    """

    def __init__(self, url: str, n: int, in_flight: int, phase_timeout: float,
                 connect_timeout: float) -> None:
        self.url, self.n = url, n
        self.phase_timeout = phase_timeout
        self.connect_timeout = connect_timeout
        self.in_flight = in_flight
        self.admission = threading.BoundedSemaphore(in_flight)
        self.go_resume = threading.Event()
        self.go_send = threading.Event()
        self.go_close = threading.Event()
        self.connected = Countdown(n)
        self.resumed = Countdown(n)
        self.echoed = Countdown(n)
        self.closed = Countdown(n)

    def _connect(self, thread: str) -> websocket.WebSocket:
        import websocket  # noqa: PLC0415 - child-only import (cached after the first)

        with self.admission:
            ws = websocket.create_connection(self.url, timeout=self.connect_timeout,
                                             header=[f"{THREAD_HEADER}: {thread}"],
                                             skip_utf8_validation=True)
        # The connect timeout bounds the handshake only, as in the library.
        ws.settimeout(self.phase_timeout)
        return ws

    @staticmethod
    def _drop(ws: websocket.WebSocket) -> None:
        # What the library does on Resume: a close frame, then shut the socket
        # at once, without waiting for the server's close frame.
        with contextlib.suppress(Exception):
            ws.send_close()
        ws.shutdown()  # type: ignore[no-untyped-call]

    def _session(self, index: int) -> None:
        stages = [self.connected, self.resumed, self.echoed, self.closed]
        ws: websocket.WebSocket | None = None
        try:
            ws = self._connect(thread_of(index, 0))
            stages.pop(0).hit()
            if not self.go_resume.wait(self.phase_timeout * 3):
                return
            self._drop(ws)
            ws = self._connect(thread_of(index, 1))
            stages.pop(0).hit()
            if not self.go_send.wait(self.phase_timeout * 3):
                return
            ws.send(f"m{index}")
            _, data = ws.recv_data()
            wrong = check_echo(data.decode("utf-8"), index, None)
            stage = stages.pop(0)
            if wrong is None:
                stage.hit()
            else:
                stage.fail(wrong)
            if not self.go_close.wait(self.phase_timeout * 3):
                return
            self._drop(ws)
            ws = None
            stages.pop(0).hit()
        except Exception as exc:
            # A failed stage fails the later ones too, so no waiter is left hanging.
            for stage in stages:
                stage.fail(f"{type(exc).__name__}: {exc}")
            if ws is not None:
                ws.shutdown()  # type: ignore[no-untyped-call]

    def open_all(self, deadline: float) -> tuple[Countdown, bool]:
        for index in range(self.n):
            threading.Thread(target=self._session, args=(index,), name=f"floor-{index}",
                             daemon=True).start()
        return self.connected, self.connected.wait_until(deadline)

    def resume_all(self, deadline: float) -> tuple[Countdown, bool]:
        self.go_resume.set()
        return self.resumed, self.resumed.wait_until(deadline)

    def send_all(self, deadline: float) -> tuple[Countdown, bool]:
        self.go_send.set()
        return self.echoed, self.echoed.wait_until(deadline)

    def close_all(self, timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        self.go_close.set()
        self.closed.wait_until(started + timeout)
        return {"in_flight_limit": self.in_flight, "closed": self.closed.ok,
                "stop_s": round(time.monotonic() - started, 3)}


# --- the child process: run one candidate, print one JSON line -------------------------------


def record_phase(result: Result, name: str, countdown: Countdown, seconds: float,
                 finished: bool, timeout: float) -> None:
    """Store one phase's outcome (and, after "open", the memory figures); log a line."""
    outcome = PhaseOutcome.of(countdown, seconds, finished)
    result.phases[name] = asdict(outcome)
    print(f"  {name}: {outcome.ok} ok, {outcome.failed} failed in {seconds:.2f}s"
          f"{' (TIMEOUT)' if not finished else ''}", file=sys.stderr, flush=True)
    if name == "open":
        result.rss_connected_kib = proc_status("VmRSS")
        result.os_threads_connected = proc_status("Threads")
        result.rss_kib_per_session = round(
            (result.rss_connected_kib - result.rss_before_kib) / result.n, 2)
    if not finished:
        result.status = (f"timeout in {name} after {timeout:g}s "
                         f"({outcome.ok} ok, {outcome.failed} failed of {result.n})")


def run_phases(candidate: Candidate, result: Result, phase_timeout: float,
               on_timeout: Callable[[str], None]) -> None:
    """Open, resume, send: time each, stop at the first phase that times out."""
    n = result.n
    result.rss_before_kib = proc_status("VmRSS")
    phases: list[tuple[str, Callable[[float], tuple[Countdown, bool]]]] = [
        ("open", candidate.open_all), ("resume", candidate.resume_all),
        ("message", candidate.send_all)]
    for name, phase in phases:
        started = time.monotonic()
        countdown, finished = phase(started + phase_timeout)
        seconds = time.monotonic() - started
        record_phase(result, name, countdown, seconds, finished, phase_timeout)
        if not finished:
            on_timeout(name)
            return
        rate = round(countdown.ok / seconds, 1) if countdown.failed == 0 else None
        setattr(result, {"open": "sessions_per_s", "resume": "resumes_per_s",
                         "message": "messages_per_s"}[name], rate)
        if countdown.failed:
            result.status = f"{countdown.failed} of {n} failed in {name}"
            return


def dump_stacks(path: Path, runtime: str) -> None:
    """Write every thread's stack (and under gevent every greenlet's) for a hang report."""
    with path.open("w", encoding="utf-8") as out:
        faulthandler.dump_traceback(file=out, all_threads=True)
        if runtime == "gevent":
            from gevent import util  # noqa: PLC0415 - gevent only exists in that runtime

            out.write("\n\n--- greenlets (gevent.util.format_run_info) ---\n")
            for line in util.format_run_info()[:20000]:
                out.write(line + "\n")
    print(f"  stacks written to {path}", file=sys.stderr, flush=True)


def child_threaded(args: argparse.Namespace) -> Result:
    result = Result(args.candidate, args.runtime, args.n)
    candidate: Candidate
    if args.candidate == "supervisor":
        candidate = SupervisorCandidate(args.url, args.n, args.in_flight, args.per_second,
                                        args.connect_timeout)
    else:
        candidate = FloorCandidate(args.url, args.n, args.in_flight, args.phase_timeout,
                                   args.connect_timeout)
    dump_path = Path(args.dump_dir) / f"stacks-{args.candidate}-{args.runtime}-{args.n}.txt"
    run_phases(candidate, result, args.phase_timeout,
               lambda phase: dump_stacks(dump_path, args.runtime))
    result.rss_end_kib = proc_status("VmRSS")
    if result.status.startswith("timeout"):
        result.extra = {"stacks": str(dump_path)}
        return result  # skip the close: it may hang on whatever hung the phase
    result.extra = candidate.close_all(timeout=60.0)
    return result


# --- candidate: python-socketio AsyncClient (asyncio) ------------------------------------------


async def child_socketio(args: argparse.Namespace) -> Result:
    import socketio  # noqa: PLC0415 - child-only import, and only in this candidate

    n, url, timeout = args.n, args.url, args.phase_timeout
    result = Result("socketio", "asyncio", n)
    admission = asyncio.Semaphore(args.in_flight)
    clients: list[socketio.AsyncClient] = []
    echoes = Countdown(n)
    echoes_done = asyncio.Event()

    def handler(index: int) -> Callable[[Any], None]:
        def on_message(data: Any) -> None:
            wrong = check_echo(data, index, None)
            if wrong is None:
                echoes.hit(str(index))
            else:
                echoes.fail(wrong, str(index))
            if echoes.finished >= n:
                echoes_done.set()
        return on_message

    async def connect(client: socketio.AsyncClient, index: int, generation: int) -> None:
        async with admission:
            await client.connect(url, auth={"thread": thread_of(index, generation)},
                                 transports=["websocket"], wait_timeout=args.connect_timeout)

    async def open_one(index: int, done: Countdown) -> None:
        # reconnection=False: a failure is a finding here, not something to retry.
        client = socketio.AsyncClient(reconnection=False)
        client.on("message", handler(index))
        clients.append(client)
        await connect(client, index, 0)
        done.hit()

    async def resume_one(client: socketio.AsyncClient, index: int, done: Countdown) -> None:
        await client.disconnect()
        await connect(client, index, 1)
        done.hit()

    async def phase(name: str, make: Callable[[Countdown], Iterable[Any]],
                    wait_for: asyncio.Event | None = None) -> bool:
        done = Countdown(n)
        # The message phase counts echoes; the others count finished coroutines.
        counted = echoes if wait_for is not None else done
        started = time.monotonic()
        tasks = [asyncio.ensure_future(job) for job in make(done)]
        finished = True
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                              timeout)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    counted.fail(f"{type(outcome).__name__}: {outcome}")
            if wait_for is not None:
                if counted.finished >= n:
                    wait_for.set()
                remaining = max(0.0, started + timeout - time.monotonic())
                await asyncio.wait_for(wait_for.wait(), remaining)
        except TimeoutError:
            finished = False
        seconds = time.monotonic() - started
        record_phase(result, name, counted, seconds, finished, timeout)
        if not finished:
            return False
        if counted.failed:
            result.status = f"{counted.failed} of {n} failed in {name}"
            return False
        rate = round(counted.ok / seconds, 1)
        setattr(result, {"open": "sessions_per_s", "resume": "resumes_per_s",
                         "message": "messages_per_s"}[name], rate)
        return True

    result.rss_before_kib = proc_status("VmRSS")
    ok = (await phase("open", lambda done: (open_one(i, done) for i in range(n)))
          and await phase("resume", lambda done: (resume_one(c, i, done)
                                                  for i, c in enumerate(clients)))
          and await phase("message", lambda done: (c.emit("message", f"m{i}")
                                                   for i, c in enumerate(clients)),
                          wait_for=echoes_done))
    result.rss_end_kib = proc_status("VmRSS")
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                              return_exceptions=True), 60)
    result.extra = {"in_flight_limit": args.in_flight, "completed": ok,
                    "stop_s": round(time.monotonic() - started, 3)}
    return result


def child_main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    # A watchdog outside Python's threads: whatever hangs, the child dumps its
    # stacks and exits before the runner has to kill it.
    faulthandler.dump_traceback_later(args.phase_timeout * 3 + 120, exit=True)
    if args.runtime == "gevent":
        from gevent import monkey  # noqa: PLC0415 - gevent only exists in that runtime

        assert monkey.is_module_patched("threading"), "gevent must be patched first"
    if args.candidate == "socketio":
        result = asyncio.run(child_socketio(args))
    else:
        result = child_threaded(args)
    print("RESULT " + json.dumps(asdict(result)), flush=True)
    sys.stderr.flush()
    # Do not wait for leftover non-daemon threads (pykka's actor threads are
    # not daemons): the measurement is over and the runner needs the answer.
    os._exit(0)


# --- the runner ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    candidate: str
    runtime: str
    n: int


def start_server(kind: str, backlog: int, max_seconds: float,
                 log: Path) -> tuple[subprocess.Popen[str], int]:
    """Start an echo server process; answer it and its port once it listens."""
    script = HERE / ("sio_echo_server.py" if kind == "socketio" else "echo_server.py")
    with log.open("a", encoding="utf-8") as err:
        server = subprocess.Popen(
            [sys.executable, str(script), "--port", "0", "--backlog", str(backlog),
             "--max-seconds", str(max_seconds)],
            stdout=subprocess.PIPE, stderr=err, text=True)
    assert server.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = server.stdout.readline()
        if not line:
            break
        if line.startswith("PORT "):
            return server, int(line.split()[1])
    server.kill()
    msg = f"{script.name} did not start in 30 s; see {log}"
    raise RuntimeError(msg)


def stop_server(server: subprocess.Popen[str]) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=15)


def run_one(row: Row, args: argparse.Namespace, log_dir: Path) -> Result:
    """One candidate at one N: fresh server, fresh client process, one Result."""
    stem = f"{row.candidate}-{row.runtime}-{row.n}"
    server_log = log_dir / f"server-{stem}.log"
    child_limit = args.phase_timeout * 3 + 180
    server, port = start_server(row.candidate, args.backlog, child_limit + 60, server_log)
    url = (f"http://127.0.0.1:{port}" if row.candidate == "socketio"
           else f"ws://127.0.0.1:{port}/ws")
    command = [sys.executable, str(Path(__file__).resolve()), "--child",
               "--candidate", row.candidate, "--runtime", row.runtime, "--n", str(row.n),
               "--url", url, "--phase-timeout", str(args.phase_timeout),
               "--in-flight", str(args.in_flight), "--per-second", str(args.per_second),
               "--connect-timeout", str(args.connect_timeout), "--dump-dir", str(log_dir)]
    client_log = log_dir / f"client-{stem}.log"
    try:
        with client_log.open("a", encoding="utf-8") as err:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                  timeout=child_limit, check=False)
    except subprocess.TimeoutExpired:
        return Result(row.candidate, row.runtime, row.n,
                      status=f"killed after {child_limit:g}s; see {client_log}")
    finally:
        stop_server(server)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = Result(**json.loads(line[len("RESULT "):]))
            # Connections dropped without a close frame, as the server saw them.
            for server_line in server_log.read_text(encoding="utf-8").splitlines():
                if server_line.startswith("abnormal closes: "):
                    result.extra["server_abnormal_closes"] = int(server_line.split(": ")[1])
            return result
    tail = client_log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
    return Result(row.candidate, row.runtime, row.n,
                  status=f"crashed (exit {done.returncode}): {' | '.join(tail)[:300]}")


METRICS = ("sessions_per_s", "resumes_per_s", "messages_per_s", "rss_kib_per_session")


def median_of(results: list[Result], metric: str) -> float | None:
    values = [getattr(r, metric) for r in results if getattr(r, metric) is not None]
    return statistics.median(values) if values else None


def floor_runtime(runtime: str) -> str:
    # The asyncio peer runs every session on one OS thread, like gevent: its
    # closest floor is the gevent one.
    return "gevent" if runtime == "asyncio" else runtime


def render_table(results: dict[Row, list[Result]]) -> str:
    lines = ["| candidate | runtime | N | sessions/s | resumes/s | messages/s "
             "| RSS KiB/session | restarts | runs ok |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    notes: list[str] = []
    for row, runs in results.items():
        ok_runs = [r for r in runs if r.status == "ok"]
        floor_runs = [r for r in results.get(Row("floor", floor_runtime(row.runtime), row.n), [])
                      if r.status == "ok"]
        cells = []
        for metric in METRICS:
            value = median_of(ok_runs, metric)
            # Throughputs of a failed run are still shown when the phase itself finished.
            if value is None:
                value = median_of(runs, metric)
            floor = median_of(floor_runs, metric)
            if value is None:
                cells.append("—")
            elif row.candidate == "floor" or not floor:
                cells.append(f"{value:,.0f}" if metric != "rss_kib_per_session"
                             else f"{value:,.1f}")
            else:
                number = (f"{value:,.0f}" if metric != "rss_kib_per_session"
                          else f"{value:,.1f}")
                cells.append(f"{number} ({value / floor:.2f}x)")
        # Restarts mean the library reconnected sessions nobody asked it to:
        # the phase rates above include that extra work.
        restarts = [r.extra["restarts"] for r in runs if "restarts" in r.extra]
        cells.append(", ".join(str(count) for count in restarts) if restarts else "—")
        statuses = sorted({r.status for r in runs if r.status != "ok"})
        for status in statuses:
            notes.append(f"- {row.candidate}/{row.runtime}/N={row.n}: {status}")
        lines.append(f"| {row.candidate} | {row.runtime} | {row.n:,} | " + " | ".join(cells)
                     + f" | {len(ok_runs)}/{len(runs)} |")
    text = "\n".join(lines)
    if notes:
        text += "\n\nFailures:\n" + "\n".join(notes)
    return text


def machine_summary() -> str:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    versions = []
    for package in ("pykka", "websocket-client", "gevent", "websockets", "python-socketio",
                    "aiohttp", "uvicorn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    # The library changes between runs: name the commit (and a dirty tree) measured.
    revision = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=False).stdout.strip()
    return (f"library {revision or 'unknown revision'}; "
            f"{os.cpu_count()} CPUs, {total_kib / 1024 / 1024:.1f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
            + ", ".join(versions))


def runner_main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-sessions-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    candidates = [c for c in args.candidates.split(",") if c]
    runtimes = [r for r in args.runtimes.split(",") if r]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    # Each floor row comes just above the library row it is compared with.
    order = [c for c in ("floor", "supervisor") if c in candidates]
    rows = [Row(candidate, runtime, n) for n in sizes for runtime in runtimes
            for candidate in order]
    if "socketio" in candidates:
        rows += [Row("socketio", "asyncio", n) for n in sizes]
        rows.sort(key=lambda row: sizes.index(row.n))
    results: dict[Row, list[Result]] = {row: [] for row in rows}
    print(f"logs: {log_dir}", file=sys.stderr, flush=True)
    total = len(rows) * args.repeat
    done = 0
    # Rounds interleave the candidates, so a noisy neighbour on a shared
    # machine slows all of them alike instead of one.
    for round_number in range(args.repeat):
        for row in rows:
            done += 1
            print(f"[{done}/{total}] round {round_number + 1}: {row.candidate} "
                  f"{row.runtime} N={row.n}", file=sys.stderr, flush=True)
            result = run_one(row, args, log_dir)
            results[row].append(result)
            print(f"    {result.status}: sessions/s={result.sessions_per_s} "
                  f"resumes/s={result.resumes_per_s} messages/s={result.messages_per_s} "
                  f"RSS KiB/session={result.rss_kib_per_session} extra={result.extra}",
                  file=sys.stderr, flush=True)
            time.sleep(args.pause)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine_summary(), "args": vars(args),
             "runs": [asdict(r) for runs in results.values() for r in runs]}, indent=2),
            encoding="utf-8")
    print(f"Machine: {machine_summary()}\n")
    print(f"Admission: {args.in_flight} handshakes in flight, {args.per_second:g}/s; "
          f"connect timeout {args.connect_timeout:g}s; "
          f"phase timeout {args.phase_timeout:g}s; median of {args.repeat} run(s); "
          "(x) = ratio to the websocket-client floor in the same runtime "
          "(gevent floor for asyncio).\n")
    print(render_table(results))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="comma-separated session counts")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help="for supervisor and floor; socketio always runs on asyncio")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    parser.add_argument("--phase-timeout", type=float, default=300.0,
                        help="seconds each phase may take before it is reported as a timeout")
    parser.add_argument("--in-flight", type=int, default=200,
                        help="handshakes in flight (library admission and the peers' limit)")
    parser.add_argument("--per-second", type=float, default=5000.0,
                        help="library admission: handshakes started per second")
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="SessionSpec.connect_timeout (library default 10), and the "
                             "peers' handshake timeout")
    parser.add_argument("--backlog", type=int, default=8192, help="echo server listen backlog")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    parser.add_argument("--json", help="also write every run's raw result here")
    parser.add_argument("--log-dir", help="client/server logs and hang dumps (default: a temp dir)")
    # Internal: the child process running one candidate.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--candidate", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--runtime", choices=(*RUNTIMES, "asyncio"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dump-dir", default=tempfile.gettempdir(), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args(sys.argv[1:])
    if parsed.child:
        child_main(parsed)
    else:
        runner_main(parsed)
