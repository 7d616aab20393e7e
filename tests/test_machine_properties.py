"""Random interleavings of commands, transport reports and timer expiries (hypothesis).

A model transport answers the machine's effects the way a real one could, in
any order; after every step the effects are checked against I1-I6.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from machine_harness import Harness, thread_of

from supervisor import _machine_io as io
from supervisor import _supervision as sup
from supervisor._machine_state import Backoff, Connected, Connecting, Ended
from supervisor.errors import ConnectionLost, SupervisorError
from supervisor.messages import Close, Resume, ResumeResult, Send

THREADS = st.sampled_from(["t-a", "t-b", "t-c", None])


class SessionMachineModel(RuleBasedStateMachine):
    """Drives one machine; ``conns`` models what the transport still owes reports for."""

    def __init__(self) -> None:
        super().__init__()
        self.harness = Harness(thread_id="t-a", session_id="m", outbox_limit=3,
                               resume_timeout=5.0, send_timeout=5.0)
        self.accepted: str | None = "t-a"
        """The latest thread id the machine accepted (the model's view of its state)."""
        self.conns: dict[int, str | None] = {}
        """Connections opened and not yet reported ended, with the thread they carry."""
        self.handshaking: set[int] = set()
        self.opened: set[int] = set()
        self.writes: dict[int, list[int]] = {}
        self.last_token: dict[int, int] = {}
        self.timers: list[Any] = []
        self.futures: dict[str, Any] = {}
        """Every command future issued, by token, and how it was settled (None: not yet)."""
        self.settled: dict[str, list[Any]] = {}
        self.numbers = iter(range(1_000_000))
        self.feed(io.Start("open"))

    # --- feeding and checking -------------------------------------------------------

    def feed(self, event: io.Input) -> None:
        self.harness.now += 0.1
        effects = self.harness.machine.handle(event, self.harness.now)
        state = self.harness.machine.state
        for effect in effects:
            self.check(effect)
        if isinstance(state, Connected):
            self.handshaking.discard(state.attempt.generation)

    def check(self, effect: io.Effect) -> None:
        match effect:
            case io.OpenConnection(generation, codec):
                # I1: the handshake carries the latest accepted thread.
                assert thread_of(codec) == self.accepted
                # Never two handshakes in flight.
                assert not self.handshaking, (generation, self.handshaking)
                self.handshaking.add(generation)
                self.conns[generation] = self.accepted
            case io.CloseConnection(generation):
                assert generation not in self.handshaking
            case io.Write(generation, _, token):
                assert generation in self.conns
                if token is not None:
                    # I6: sends go out in the order given, on every connection.
                    assert token > self.last_token.get(generation, -1)
                    self.last_token[generation] = token
                    self.writes.setdefault(generation, []).append(token)
            case io.StartTimer(_, fire):
                self.timers.append(fire)
            case io.Resolve(future, value) | io.Reject(future, value):
                self.settled.setdefault(future, []).append(value)
                if isinstance(value, ResumeResult) and not value.superseded:
                    # I2: resolved for the connection that carries its thread.
                    assert self.conns.get(value.generation, "gone") == value.thread_id
                if isinstance(effect, io.Reject):
                    assert isinstance(value, SupervisorError | TypeError | ValueError)
            case io.Deliver(event):
                # I4: labelled with the thread of the connection that read it.
                assert self.conns[event.generation] == event.thread_id
            case io.HandOver(commands):
                for command in commands:
                    self.futures.pop(command.reply, None)

    def token(self, kind: str) -> str:
        name = f"{kind}{next(self.numbers)}"
        self.futures[name] = kind
        return name

    # --- user commands ----------------------------------------------------------------

    @rule(thread=THREADS)
    def resume(self, thread: str | None) -> None:
        if not isinstance(self.harness.machine.state, Ended):
            self.accepted = thread
        self.feed(Resume(thread, self.token("r")))

    @rule(text=st.text(min_size=1, max_size=3))
    def send(self, text: str) -> None:
        self.feed(Send(text, self.token("s")))

    # --- the transport ----------------------------------------------------------------

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def admitted(self, data: st.DataObject) -> None:
        self.feed(io.ConnAdmitted(data.draw(st.sampled_from(sorted(self.conns)))))

    @precondition(lambda self: set(self.conns) - self.opened)
    @rule(data=st.data())
    def opened_(self, data: st.DataObject) -> None:
        generation = data.draw(st.sampled_from(sorted(set(self.conns) - self.opened)))
        self.opened.add(generation)
        self.handshaking.discard(generation)  # a plain WebSocket is ready once upgraded
        self.feed(io.ConnOpened(generation, self.harness.now, self.harness.now))

    @precondition(lambda self: self.opened & set(self.conns))
    @rule(data=st.data(), text=st.sampled_from(["x", "y"]))
    def frame(self, data: st.DataObject, text: str) -> None:
        self.feed(io.FrameIn(data.draw(st.sampled_from(sorted(self.opened & set(self.conns)))),
                             text))

    @precondition(lambda self: any(self.writes.values()))
    @rule(data=st.data())
    def written(self, data: st.DataObject) -> None:
        generation = data.draw(st.sampled_from(sorted(g for g, w in self.writes.items() if w)))
        self.feed(io.FrameWritten(generation, self.writes[generation].pop(0)))

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), clean=st.booleans())
    def ended(self, data: st.DataObject, clean: bool) -> None:
        generation = data.draw(st.sampled_from(sorted(self.conns)))
        del self.conns[generation]
        self.handshaking.discard(generation)
        self.writes.pop(generation, None)
        if generation in self.opened:
            self.feed(io.ConnEnded(generation, None if clean else ConnectionLost("x"), clean))
        else:
            self.feed(io.ConnFailed(generation, ConnectionLost("refused")))

    # --- timers and the supervisor ------------------------------------------------------

    @precondition(lambda self: self.timers)
    @rule(data=st.data())
    def timer_fires(self, data: st.DataObject) -> None:
        fire = self.timers.pop(data.draw(st.integers(0, len(self.timers) - 1)))
        if isinstance(fire, io.DeadlineCheck):
            self.harness.now = max(self.harness.now, fire.at)
        self.feed(fire)

    @precondition(lambda self: isinstance(self.harness.machine.state, Backoff))
    @rule(give_up=st.booleans())
    def supervisor_answers(self, give_up: bool) -> None:
        loss = self.harness.machine.state.loss  # type: ignore[union-attr]
        self.feed(sup.GiveUp(loss, "budget") if give_up else sup.RestartIn(loss, 0.1))

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def futures_settle_at_most_once(self) -> None:
        """I6: no future is settled twice (the first answer is the only one)."""
        for token, outcomes in self.settled.items():
            assert len(outcomes) == 1, (token, outcomes)

    @invariant()
    def state_is_one_of_four(self) -> None:
        assert isinstance(self.harness.machine.state, Connecting | Connected | Backoff | Ended)

    def teardown(self) -> None:
        """I6: after a close, every command future has been settled, typed."""
        self.feed(Close(self.token("c")))
        unsettled = [token for token in self.futures if token not in self.settled]
        assert unsettled == []


SessionMachineModel.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestSessionMachineModel = SessionMachineModel.TestCase
