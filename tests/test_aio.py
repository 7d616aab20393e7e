"""supervisor.aio: awaitables that settle through the loop, bounded event iterators.

The futures and the event stream are tested on a real loop fed from real
threads; the sessions against the embedded target in a subprocess. Marked
``concurrency`` where they run sessions, so they run under gevent too.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from recording_server import RecordingServer
from support import fast_policy
from target_process import TargetProcess

from supervisor import Event, Lifecycle, LifecycleKind, SessionSpec, SessionState, SessionStatus
from supervisor._futures import CallbackFuture, new_future, on_loop, reject, resolve
from supervisor._supervisor_actor import Adopt
from supervisor.aio import AsyncSupervisor, EventStream
from supervisor.errors import EventsOverflowed, ReplyTimeout, SessionClosed, SupervisorStopped
from supervisor.protocols import websocket as websocket_protocol

TIMEOUT = 15.0


def thread() -> str:
    return str(uuid.uuid4())


def lifecycle(kind: LifecycleKind) -> Lifecycle:
    return Lifecycle("s", kind, None, 1, time.monotonic())


async def read_into(items: AsyncIterator[Any], seen: list[Any]) -> None:
    """Append every item until the iterator ends or raises."""
    async for item in items:
        seen.append(item)


async def read_to_gap(stream: EventStream) -> list[Any]:
    """The data read before the stream raises ``EventsOverflowed``, then ``("gap", dropped)``."""
    read: list[Any] = []
    with pytest.raises(EventsOverflowed) as info:
        await read_into(stream, read)
    return [*(item.data for item in read), ("gap", info.value.dropped)]


class TestCallbackFuture:
    def test_callback_runs_once_when_settled_in_the_settling_thread(self) -> None:
        """add_done_callback runs fn(future) once, in the thread that settles it."""
        future: CallbackFuture[int] = new_future()
        seen: list[tuple[int, str]] = []
        future.add_done_callback(
            lambda f: seen.append((f.get(timeout=0), threading.current_thread().name)))
        setter = threading.Thread(target=resolve, args=(future, 7), name="setter")
        setter.start()
        setter.join(5)
        resolve(future, 8)  # a second answer loses, and calls nothing again
        assert seen == [(7, "setter")]

    def test_callback_added_after_settling_runs_at_once(self) -> None:
        """A callback added to a settled future runs at once, in the caller's thread."""
        future: CallbackFuture[Any] = new_future()
        reject(future, SessionClosed("closed"))
        seen: list[BaseException] = []

        def note(f: CallbackFuture[Any]) -> None:
            with pytest.raises(SessionClosed) as info:
                f.get(timeout=0)
            seen.append(info.value)

        future.add_done_callback(note)
        assert len(seen) == 1

    def test_raising_callback_is_contained(self) -> None:
        """A callback that raises is logged; the settler and later callbacks carry on."""
        future: CallbackFuture[int] = new_future()
        seen: list[int] = []

        def boom(_f: CallbackFuture[int]) -> None:
            raise RuntimeError("user bug")

        future.add_done_callback(boom)
        future.add_done_callback(lambda f: seen.append(f.get(timeout=0)))
        future.set(3)  # does not raise
        assert seen == [3]
        assert future.get(timeout=0) == 3

    def test_await_does_not_block_the_loop(self) -> None:
        """Awaiting a command future lets other tasks run until another thread settles it."""
        future: CallbackFuture[str] = new_future()
        ticks: list[float] = []

        async def main() -> str:
            async def tick() -> None:
                while True:
                    ticks.append(time.monotonic())
                    if len(ticks) == 10:  # the loop ran while the future was awaited
                        threading.Thread(target=resolve, args=(future, "done")).start()
                    await asyncio.sleep(0.005)

            ticker = asyncio.create_task(tick())
            # Bounds the test if awaiting froze the loop: the ticker would never get to 10.
            fallback = threading.Timer(TIMEOUT, resolve, args=(future, "loop frozen"))
            fallback.start()
            value = await future
            fallback.cancel()
            ticker.cancel()
            return value

        assert asyncio.run(main()) == "done"  # pykka's own __await__ would freeze the ticker
        assert len(ticks) >= 10


class TestEventStream:
    def run_with_producer(self, stream_limit: int, items: list[Any],
                          consume: Any) -> tuple[Any, int]:
        """Fill a stream from another thread, then consume it on the loop."""
        dropped: list[int] = []

        async def main() -> Any:
            stream = EventStream(asyncio.get_running_loop(), stream_limit, dropped.append)
            producer = threading.Thread(target=lambda: [stream.put(i) for i in items])
            producer.start()
            await asyncio.get_running_loop().run_in_executor(None, producer.join, 5)
            assert not producer.is_alive(), "the producer did not finish"
            return await consume(stream)

        return asyncio.run(main()), sum(dropped)

    def test_overflow_raises_at_the_gap_then_goes_on(self) -> None:
        """A full buffer drops and counts; the iterator raises where the gap is, then resumes."""
        events = [Event("s", None, 1, "message", n) for n in range(8)]
        closed = lifecycle(LifecycleKind.CLOSED)

        async def consume(stream: EventStream) -> list[Any]:
            seen = await read_to_gap(stream)
            stream.put(events[0])  # room again: later items follow the gap
            stream.put(closed)
            seen.extend([item async for item in stream])
            return seen

        seen, dropped = self.run_with_producer(5, events, consume)
        assert seen == [0, 1, 2, 3, 4, ("gap", 3), events[0], closed]
        assert dropped == 3

    def test_full_buffer_keeps_the_terminal_report(self) -> None:
        """A full buffer still takes CLOSED: the consumer sees the gap, then why it ended."""
        events = [Event("s", None, 1, "message", n) for n in range(5)]
        closed = lifecycle(LifecycleKind.CLOSED)

        async def consume(stream: EventStream) -> list[Any]:
            seen = await read_to_gap(stream)
            seen.extend([item async for item in stream])
            return seen

        seen, dropped = self.run_with_producer(3, [*events, closed], consume)
        assert seen == [0, 1, 2, ("gap", 2), closed]
        assert dropped == 2

    def test_terminal_lifecycle_ends_the_iteration(self) -> None:
        """After CLOSED or FAILED the iterator ends, and later items are ignored."""
        failed = lifecycle(LifecycleKind.FAILED)
        items = [lifecycle(LifecycleKind.CONNECTED), failed, lifecycle(LifecycleKind.CONNECTING)]

        async def consume(stream: EventStream) -> list[Any]:
            return [item.kind async for item in stream]

        seen, dropped = self.run_with_producer(10, items, consume)
        assert seen == [LifecycleKind.CONNECTED, LifecycleKind.FAILED]
        assert dropped == 0

    def test_waiting_iterator_wakes_on_a_put_from_another_thread(self) -> None:
        """An iterator waiting on an empty buffer wakes when an actor thread adds an item."""

        async def main() -> Any:
            stream = EventStream(asyncio.get_running_loop(), 4, lambda _n: None)
            waiting = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0)  # the iterator is now parked on the empty buffer
            assert not waiting.done()
            threading.Thread(target=stream.put, args=(lifecycle(LifecycleKind.LOST),)).start()
            return await asyncio.wait_for(waiting, TIMEOUT)

        assert asyncio.run(main()).kind is LifecycleKind.LOST

    def test_buffer_bound_must_be_positive(self) -> None:
        """event_buffer below 1 is refused."""

        async def main() -> None:
            EventStream(asyncio.get_running_loop(), 0, lambda _n: None)

        with pytest.raises(ValueError, match="at least 1"):
            asyncio.run(main())


@pytest.fixture(scope="module")
def target() -> Iterator[TargetProcess]:
    """The embedded target in a subprocess, streaming replies token by token."""
    with TargetProcess("--token-delay", "0.002") as running:
        yield running


def chainlit(url: str, thread_id: str | None = None) -> SessionSpec:
    return SessionSpec(url=url, protocol="chainlit", chainlit_version="2", thread_id=thread_id,
                       connect_timeout=TIMEOUT)


@pytest.mark.concurrency
class TestAsyncSession:
    def test_commands_resolve_through_the_loop(self, target: TargetProcess) -> None:
        """resume, chat, call, emit and close are awaited; the target saw the new thread."""
        first, second = thread(), thread()

        async def main() -> tuple[Any, ...]:
            async with AsyncSupervisor.start() as sup:
                session = sup.open(chainlit(target.url, first))
                result = await asyncio.wait_for(session.resume(second), TIMEOUT)
                turn = await asyncio.wait_for(session.chat("one two three"), TIMEOUT)
                ack = await asyncio.wait_for(session.call("echo_ack", {"n": 1}), TIMEOUT)
                await asyncio.wait_for(session.emit("echo_ack", {"n": 2}), TIMEOUT)
                state = session.state()
                await asyncio.wait_for(session.close(), TIMEOUT)
                return result, turn, ack, state

        result, turn, ack, state = asyncio.run(main())
        assert (result.thread_id, result.superseded) == (second, False)
        assert turn.text == "one two three"
        assert ack == {"data": {"n": 1}, "thread": second}
        assert (state.status, state.connected_thread_id) == (SessionStatus.CONNECTED, second)
        assert second in {h["thread_id"] for h in target.handshakes()}

    def test_per_call_timeout_reaches_the_session(self, target: TargetProcess) -> None:
        """call(timeout=...) fails ReplyTimeout at its deadline (the target never acks it)."""

        async def main() -> float:
            async with AsyncSupervisor.start() as sup:
                session = sup.open(chainlit(target.url))
                await asyncio.wait_for(session.resume(thread()), TIMEOUT)
                started = time.monotonic()
                with pytest.raises(ReplyTimeout):
                    await asyncio.wait_for(session.call("no_such_event", timeout=0.3), TIMEOUT)
                return time.monotonic() - started

        assert 0.3 <= asyncio.run(main()) < TIMEOUT

    def test_events_stream_replies_and_lifecycle_in_order(self, target: TargetProcess) -> None:
        """events() yields CONNECTING, CONNECTED, the reply's tokens, then CLOSED and ends."""

        async def main() -> list[Any]:
            async with AsyncSupervisor.start() as sup:
                session = sup.open(chainlit(target.url, thread()))
                await asyncio.wait_for(session.chat("alpha beta gamma"), TIMEOUT)
                await asyncio.wait_for(session.close(), TIMEOUT)
                return [item async for item in session.events()]

        items = asyncio.run(main())
        kinds = [item.kind for item in items if isinstance(item, Lifecycle)]
        assert kinds == [LifecycleKind.CONNECTING, LifecycleKind.CONNECTED, LifecycleKind.CLOSED]
        names = [item.name for item in items if isinstance(item, Event)]
        assert names.index("stream_start") < names.index("stream_token")
        tokens = [item.data["token"] for item in items
                  if isinstance(item, Event) and item.name == "stream_token"]
        assert "".join(tokens).strip() == "beta gamma"  # the first token rides stream_start
        assert isinstance(items[-1], Lifecycle)

    def test_cancelled_resume_still_switches_the_thread(self, target: TargetProcess) -> None:
        """Cancelling the task awaiting a Resume stops the wait, not the thread switch."""
        wanted = thread()

        async def main() -> Any:
            async with AsyncSupervisor.start() as sup:
                session = sup.open(chainlit(target.url, thread()))
                waiting = asyncio.ensure_future(session.resume(wanted))
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                async for item in session.events():
                    if (isinstance(item, Lifecycle) and item.kind is LifecycleKind.CONNECTED
                            and item.thread_id == wanted):
                        break
                # The snapshot is published after the CONNECTED report: a Resume of the
                # live thread answers only once the session has handled its connect.
                again = await asyncio.wait_for(session.resume(wanted), TIMEOUT)
                assert again.generation == item.generation
                return session.state()

        state = asyncio.run(asyncio.wait_for(main(), 2 * TIMEOUT))
        assert state.connected_thread_id == wanted
        assert wanted in {h["thread_id"] for h in target.handshakes()}

    def test_stop_ends_every_event_iterator(self, target: TargetProcess) -> None:
        """stop() closes the sessions; an iterator waiting for events ends."""

        async def main() -> list[Any]:
            sup = AsyncSupervisor.start()
            session = sup.open(chainlit(target.url))
            seen: list[Any] = []

            reader = asyncio.create_task(read_into(session.events(), seen))
            await asyncio.wait_for(session.resume("t-stop"), TIMEOUT)
            await sup.stop(timeout=TIMEOUT)
            await asyncio.wait_for(reader, TIMEOUT)
            return seen

        seen = asyncio.run(main())
        assert isinstance(seen[-1], Lifecycle)
        assert seen[-1].kind is LifecycleKind.CLOSED

    def test_full_event_buffer_counts_the_drops(self, target: TargetProcess) -> None:
        """An unread 4-item buffer drops the rest of a reply, counted in the metrics."""

        async def main() -> tuple[list[Any], int]:
            async with AsyncSupervisor.start(event_buffer=4) as sup:
                session = sup.open(chainlit(target.url))
                await asyncio.wait_for(session.chat("a b c d e f g h"), TIMEOUT)
                seen: list[Any] = []
                with pytest.raises(EventsOverflowed) as info:
                    await read_into(session.events(), seen)
                assert info.value.dropped == sup.metrics().events_dropped
                return seen, info.value.dropped

        seen, dropped = asyncio.run(main())
        assert len(seen) == 4
        assert dropped > 0

    def test_crash_past_the_budget_ends_the_iterator_with_failed(
            self, ws_server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """An actor that crashes with no restart left: events() ends on a FAILED report."""
        def received(self: Any, frame: str | bytes) -> Any:
            raise RuntimeError("codec bug")

        monkeypatch.setattr(websocket_protocol.WebSocketCodec, "received", received)

        async def main() -> tuple[list[Any], SessionState]:
            async with AsyncSupervisor.start(fast_policy(max_restarts=0)) as sup:
                session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-1"))
                await asyncio.wait_for(session.resume("t-1"), TIMEOUT)
                await asyncio.wait_for(session.send("boom"), TIMEOUT)  # its echo crashes it
                seen: list[Any] = []
                await asyncio.wait_for(read_into(session.events(), seen), TIMEOUT)
                return seen, session.state()

        seen, state = asyncio.run(main())
        assert state.status is SessionStatus.FAILED
        last = seen[-1]
        assert isinstance(last, Lifecycle)
        assert (last.kind, last.error, last.thread_id) == (
            LifecycleKind.FAILED, "SessionCrashed", "t-1")
        assert last.reason == state.reason


@pytest.mark.parametrize("event_buffer", [0, -1])
def test_open_refuses_an_event_buffer_below_one(event_buffer: int) -> None:
    """open(event_buffer=0) raises ValueError before opening; it is not the default."""

    async def main() -> Any:
        async with AsyncSupervisor.start() as sup:
            with pytest.raises(ValueError, match="at least 1"):
                sup.open(SessionSpec(url="ws://127.0.0.1:9/"), event_buffer=event_buffer)
            return sup.supervisor.metrics().sessions

    assert sum(asyncio.run(main()).values()) == 0  # nothing was opened


def test_start_refuses_an_event_buffer_below_one() -> None:
    """AsyncSupervisor.start(event_buffer=0) raises ValueError before starting anything."""
    with pytest.raises(ValueError, match="at least 1"):
        AsyncSupervisor.start(event_buffer=0)


def test_a_session_ended_before_open_returns_leaves_no_stream() -> None:
    """A terminal report that beats open()'s return unregisters the stream for good."""

    class EndsAtOnce:
        def tell(self, message: Adopt) -> None:
            message.record.retire(SessionClosed("closed at once"), None, SessionStatus.CLOSED)

    async def main() -> tuple[dict[str, EventStream], list[Any]]:
        async with AsyncSupervisor.start() as sup:
            actor, sup.supervisor._ref = sup.supervisor._ref, EndsAtOnce()  # type: ignore[assignment]
            try:
                session = sup.open(SessionSpec(url="ws://127.0.0.1:9/"))
            finally:
                sup.supervisor._ref = actor
            streams = dict(sup._streams)
            seen = [item async for item in session.events()]
            return streams, seen

    streams, seen = asyncio.run(main())
    assert streams == {}
    assert [item.kind for item in seen] == [LifecycleKind.CLOSED]


def test_open_after_stop_registers_no_stream() -> None:
    """open() refused by a stopped supervisor leaves no stream behind."""

    async def main() -> dict[str, EventStream]:
        sup = AsyncSupervisor.start()
        await sup.stop()
        with pytest.raises(SupervisorStopped):
            sup.open(SessionSpec(url="ws://127.0.0.1:9/"))
        return dict(sup._streams)

    assert asyncio.run(main()) == {}


def test_open_outside_a_running_loop_is_refused() -> None:
    """AsyncSupervisor.open needs the loop its awaitables will settle on."""
    sup = AsyncSupervisor.start()
    try:
        with pytest.raises(RuntimeError, match="no running event loop"):
            sup.open(SessionSpec(url="ws://127.0.0.1:9/"))
    finally:
        sup.supervisor.stop()


def test_settling_after_the_loop_closed_is_harmless() -> None:
    """A command answered after its loop closed is dropped quietly, not raised in the actor."""
    future: CallbackFuture[int] = new_future()
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        on_loop(future, loops[0])

    asyncio.run(main())
    assert loops[0].is_closed()
    resolve(future, 1)  # the bridge's call_soon_threadsafe meets a closed loop: no raise
    assert future.get(timeout=0) == 1
