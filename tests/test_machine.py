"""I1-I8 as tables on the pure session machine: a sequence of inputs, the exact effects."""

from __future__ import annotations

from typing import Any

import pytest
from machine_harness import Harness

from supervisor import _machine_io as io
from supervisor import _supervision as sup
from supervisor.errors import ConnectionLost, HandshakeError, HandshakeRefused
from supervisor.messages import Chat, Close, Resume, ResumeResult, Send, SessionStatus

Step = tuple[io.Input, list[tuple[Any, ...]]]


def run(harness: Harness, steps: list[Step]) -> None:
    """Feed each input; its effects must be exactly the ones listed."""
    for number, (event, expected) in enumerate(steps):
        assert harness(event) == expected, f"step {number}: {event!r}"


def connected(thread: str | None = "t-0", **spec: Any) -> Harness:
    """A machine whose first connection (generation 1) is up."""
    harness = Harness(thread_id=thread, session_id="m", **spec)
    harness(io.Start("open"))
    harness.connect(1)
    return harness


OPEN_T0 = [("notify", "connecting", "t-0", 1, "open"), ("open", 1, "t-0")]
READY_1 = [("notify", "connected", "t-0", 1, None)]


class TestIdentity:
    """I1: every handshake carries the thread id the state held when it began."""

    def test_each_handshake_carries_the_accepted_thread(self) -> None:
        """Open with t-0, Resume t-1 once connected: close gen 1, open gen 2 with t-1."""
        harness = Harness(thread_id="t-0", session_id="m")
        run(harness, [
            (io.Start("open"), OPEN_T0),
            (io.ConnAdmitted(1), [("timer", 10.0, io.HandshakeDeadline(1))]),
            (io.ConnOpened(1, 0.0, 0.0), READY_1),
            (Resume("t-1", "r1"), [("timer", 30.0, io.DeadlineCheck(30.0)), ("close", 1),
                                   ("notify", "connecting", "t-1", 2, "resume"),
                                   ("open", 2, "t-1")]),
        ])

    def test_a_user_header_cannot_smuggle_a_thread(self) -> None:
        """The thread header comes from state even when headers= names it."""
        harness = Harness(thread_id="t-state", headers={"x-chainlit-thread-id": "t-evil"})
        assert harness(io.Start("open"))[-1] == ("open", 1, "t-state")


class TestResumeCompletes:
    """I2: a Resume resolves only once the connection carrying its thread is ready."""

    def test_resume_resolves_on_the_ready_of_its_own_connection(self) -> None:
        """Ready of gen 2 (t-1) resolves the Resume with generation 2."""
        harness = connected()
        harness(Resume("t-1", "r1"))
        run(harness, [
            (io.ConnEnded(1, None, clean=False), []),  # the closed old connection: stale
            (io.ConnAdmitted(2), [("timer", 10.0, io.HandshakeDeadline(2))]),
            (io.ConnOpened(2, 0.0, 0.0), [("notify", "connected", "t-1", 2, None),
                                          ("resolve", "r1", ResumeResult("t-1", 2))]),
        ])
        assert harness.state().connected_thread_id == "t-1"

    def test_resuming_the_live_thread_resolves_at_once(self) -> None:
        """No handshake for the thread already live."""
        harness = connected()
        assert harness(Resume("t-0", "r1")) == [("resolve", "r1", ResumeResult("t-0", 1))]


class TestResumesCoalesce:
    """I3: k Resumes during one handshake cause one more handshake, with the last id."""

    def test_three_resumes_during_a_handshake(self) -> None:
        """Abort once; older Resumes resolve superseded; one handshake for t-3 after the report."""
        harness = Harness(thread_id="t-0", session_id="m")
        harness(io.Start("open"))
        superseded = ResumeResult("t-1", -1, superseded=True)
        run(harness, [
            (Resume("t-1", "r1"), [("timer", 30.0, io.DeadlineCheck(30.0)), ("abort", 1)]),
            (Resume("t-2", "r2"), [("resolve", "r1", superseded)]),
            (Resume("t-3", "r3"), [("resolve", "r2", ResumeResult("t-2", -1, superseded=True))]),
            (io.ConnFailed(1, ConnectionLost("aborted")),
             [("notify", "connecting", "t-3", 2, "resume"), ("open", 2, "t-3")]),
        ])


class TestNoCrossTalk:
    """I4: frames are labelled with their connection's thread; stale ones are dropped, counted."""

    def test_frames_of_a_superseded_connection_are_dropped(self) -> None:
        """After a Resume, a frame still arriving on gen 1 is counted, not delivered."""
        harness = connected()
        harness(Resume("t-1", "r1"))
        assert harness(io.FrameIn(1, "late")) == []
        assert harness.state().stale_frames_dropped == 1

    def test_event_thread_comes_from_the_connection(self) -> None:
        """A frame on gen 1 is labelled t-0 and generation 1."""
        harness = connected()
        assert harness(io.FrameIn(1, "hi")) == [("deliver", "t-0", 1, "hi", None)]

    def test_no_listener_no_event(self) -> None:
        """With no on_event, an event that asks no answer is not delivered; one that does is."""
        harness = connected(protocol="socketio", on_event=None)
        harness(io.FrameIn(1, "0{\"sid\":\"x\",\"pingInterval\":25000,\"pingTimeout\":5000}"))
        harness(io.FrameIn(1, "40{\"sid\":\"y\"}"))
        assert harness(io.FrameIn(1, '42["news",1]')) == []
        assert harness(io.FrameIn(1, '427["ask",2]')) == [("deliver", "t-0", 1, 2, 7)]


class TestRestartsResumeLatest:
    """I5: a restart reconnects with the latest accepted thread."""

    def test_loss_then_restart_carries_the_latest_thread(self) -> None:
        """Loss reports to the supervisor; RestartIn arms a timer; Reconnect opens with t-2."""
        harness = connected()
        harness(Resume("t-2", "r1"))
        harness.connect(2)
        run(harness, [
            (io.ConnEnded(2, None, clean=True),
             [("notify", "lost", "t-2", 2, None),
              ("report", sup.ConnectionDown("m", 1, None, True, 0.0))]),
            (sup.RestartIn(1, 0.25), [("timer", 0.25, sup.Reconnect(1))]),
            (sup.Reconnect(1), [("notify", "restart", "t-2", 2, None),
                                ("notify", "connecting", "t-2", 3, "restart"),
                                ("open", 3, "t-2")]),
        ])
        assert harness.state().restarts == 1

    def test_crash_successor_resumes_the_published_thread(self) -> None:
        """A crash hands the pending Resume over; the successor opens with its thread."""
        harness = connected()
        harness(Resume("t-5", "r1"))
        assert harness(io.Crashed(RuntimeError("bug"))) == [
            ("abort", 2), ("handover", ("r1",)),
            ("report", sup.ActorCrashed("m", harness.effects[-1].message.error))]
        successor = Harness(previous=harness.state(), thread_id="t-0", session_id="m")
        assert successor(io.Start("restart"))[-1] == ("open", 3, "t-5")
        assert successor.state().restarts == 1

    def test_stale_restart_answers_are_ignored(self) -> None:
        """A Reconnect for an older loss (a Resume reconnected since) does nothing."""
        harness = connected()
        harness(io.ConnEnded(1, None, clean=False))
        harness(Resume("t-9", "r1"))  # preempts the backoff
        assert harness(sup.Reconnect(1)) == []
        assert harness(sup.GiveUp(1, "late")) == []


class TestNothingDroppedSilently:
    """I6: every future settles, typed; the outbox is bounded and ordered; deadlines hold."""

    def test_sends_while_connecting_flush_in_order_and_resolve_when_written(self) -> None:
        """Queued sends are written in order on ready, resolved on their Written reports."""
        harness = Harness(thread_id="t-0", session_id="m")
        harness(io.Start("open"))
        harness(Send("a", "s0"))
        harness(Send("b", "s1"))
        assert harness.state().outbox == 2
        harness(io.ConnAdmitted(1))
        assert harness(io.ConnOpened(1, 0.0, 0.0)) == [
            *READY_1, ("write", 1, "a", 0), ("write", 1, "b", 1)]
        assert harness(io.FrameWritten(1, 0)) == [("resolve", "s0", None)]
        assert harness(io.FrameWritten(1, 1)) == [("resolve", "s1", None)]

    def test_full_outbox_fails_typed(self) -> None:
        """Past outbox_limit, a send fails with OutboxFull at once."""
        harness = Harness(outbox_limit=1)
        harness(io.Start("open"))
        harness(Send("a", "s0"))
        assert harness(Send("b", "s1")) == [("reject", "s1", "OutboxFull")]

    def test_unwritten_sends_go_again_on_the_next_connection(self) -> None:
        """A frame its connection never wrote is re-sent after the reconnect, once."""
        harness = connected()
        harness(Send("a", "s0"))
        harness(io.ConnEnded(1, ConnectionLost("reset"), clean=False))
        harness(sup.RestartIn(1, 0.0))
        harness(sup.Reconnect(1))
        harness(io.ConnAdmitted(2))
        assert harness(io.ConnOpened(2, 0.0, 0.0))[-1] == ("write", 2, "a", 0)

    def test_close_fails_everything_pending_and_retires(self) -> None:
        """Close: the pending Resume and send fail SessionClosed; one retirement."""
        harness = Harness(thread_id="t-0", session_id="m")
        harness(io.Start("open"))
        harness(Resume("t-1", "r1"))
        harness(Send("a", "s0"))
        assert harness(Close("c")) == [
            ("abort", 1), ("reject", "r1", "SessionClosed"), ("reject", "s0", "SessionClosed"),
            ("notify", "closed", "t-1", 1, None), ("retired", "SessionClosed", None),
            ("resolve", "c", None)]
        assert harness(Send("late", "s1")) == [("reject", "s1", "SessionClosed")]
        assert harness.state().status is SessionStatus.CLOSED

    def test_every_kind_of_future_has_a_deadline(self) -> None:
        """Resume, send, call and chat fail typed at their deadlines on a silent server."""
        harness = Harness(thread_id="t-0", protocol="chainlit", chainlit_version="2",
                          resume_timeout=1.0, send_timeout=2.0, reply_timeout=3.0)
        harness(io.Start("open"))
        harness(Resume("t-1", "r1"))
        harness(Send("a", "s0", event="e"))
        harness(Send("b", "s1", event="e", want_ack=True))
        harness(Chat("hi", "c0"))
        assert harness(io.DeadlineCheck(1.0), at=1.0) == [
            ("reject", "r1", "ResumeTimeout"), ("timer", 1.0, io.DeadlineCheck(2.0))]
        assert harness(io.DeadlineCheck(2.0), at=2.0) == [
            ("reject", "s0", "SendTimeout"), ("timer", 1.0, io.DeadlineCheck(3.0))]
        assert harness(io.DeadlineCheck(3.0), at=3.0) == [
            ("reject", "s1", "ReplyTimeout"), ("reject", "c0", "ReplyTimeout")]
        assert harness.state().status is SessionStatus.CONNECTING  # it keeps trying

    def test_per_call_timeout_overrides_the_spec(self) -> None:
        """A command's own timeout wins over the spec's default."""
        harness = Harness(resume_timeout=30.0)
        harness(io.Start("open"))
        assert harness(Resume("t-1", "r1", timeout=0.5))[0] == (
            "timer", 0.5, io.DeadlineCheck(0.5))


class TestNoStorms:
    """I7: the supervisor decides restarts; a give-up retires; Resume preempts a backoff."""

    def test_give_up_fails_the_session(self) -> None:
        """GiveUp for the current loss: pending Resume fails SessionFailed; retired FAILED."""
        harness = Harness(thread_id="t-0", session_id="m")
        harness(io.Start("open"))
        harness(Resume("t-0", "r1"))
        refused = HandshakeRefused(401)
        harness(io.ConnFailed(1, refused))
        assert harness(sup.GiveUp(1, "handshake refused with HTTP 401")) == [
            ("reject", "r1", "SessionFailed"),
            ("notify", "failed", "t-0", 1, None),
            ("retired", "SessionFailed", "handshake refused with HTTP 401")]
        assert harness.state().status is SessionStatus.FAILED
        assert harness(Close("c")) == [("forget",), ("resolve", "c", None)]

    def test_resume_during_backoff_connects_now(self) -> None:
        """The backoff is preempted (reported for a refund); not counted as a restart."""
        harness = connected()
        harness(io.ConnEnded(1, None, clean=False))
        assert harness(Resume("t-1", "r1")) == [
            ("timer", 30.0, io.DeadlineCheck(30.0)),
            ("report", sup.RestartPreempted("m", 1)),
            ("notify", "connecting", "t-1", 2, "resume"), ("open", 2, "t-1")]
        assert harness.state().restarts == 0

    def test_a_silent_handshake_times_out_after_admission(self) -> None:
        """The connect timeout aborts the handshake; its report then counts as the loss."""
        harness = Harness(thread_id="t-0", session_id="m", connect_timeout=2.0)
        harness(io.Start("open"))
        harness(io.ConnAdmitted(1))
        assert harness(io.HandshakeDeadline(1), at=2.0) == [("abort", 1)]
        effects = harness(io.ConnFailed(1, ConnectionLost("aborted")))
        assert effects[0] == ("notify", "lost", "t-0", 1, None)
        assert "no WebSocket upgrade within 2s" in harness.state().reason


class TestIsolation:
    """I8: a handshake carries its own session's headers and cookies only."""

    def test_two_machines_carry_their_own_cookies(self) -> None:
        """Each machine's codec carries only the cookies of its own spec."""
        first = Harness(cookies={"a": "1"})
        second = Harness()
        first(io.Start("open"))
        second(io.Start("open"))
        (open_a,) = [e for e in first.effects if isinstance(e, io.OpenConnection)]
        (open_b,) = [e for e in second.effects if isinstance(e, io.OpenConnection)]
        assert open_a.codec.handshake(lambda _: "2").cookie_header() == "a=1"
        assert open_b.codec.handshake(lambda _: "2").cookie_header() is None

    def test_control_characters_never_reach_the_machine(self) -> None:
        """The spec refuses them before a machine exists."""
        with pytest.raises(ValueError, match="control character"):
            Harness(thread_id="a\r\nb")


class TestWrittenLate:
    """A Written report that arrives after its connection went settles the right way."""

    def test_a_call_written_on_a_dead_connection_fails_lost(self) -> None:
        """Its ack can never come: ConnectionLost, not a resolve with None."""
        harness = connected(protocol="socketio")
        harness(io.FrameIn(1, "0{\"sid\":\"x\",\"pingInterval\":25000,\"pingTimeout\":5000}"))
        harness(io.FrameIn(1, "40{\"sid\":\"y\"}"))
        harness(Send({"q": 1}, "k0", event="ask", want_ack=True))
        harness(io.ConnEnded(1, ConnectionLost("reset"), clean=False))
        assert harness(io.FrameWritten(1, 0)) == [("reject", "k0", "ConnectionLost")]

    def test_a_plain_send_written_late_resolves_once_and_is_not_resent(self) -> None:
        """Re-queued when its connection went, then reported written: resolved, dequeued."""
        harness = connected()
        harness(Send("a", "s0"))
        harness(io.ConnEnded(1, ConnectionLost("reset"), clean=False))
        assert harness(io.FrameWritten(1, 0)) == [("resolve", "s0", None)]
        assert harness.state().outbox == 0


class TestBadArguments:
    """User values that cannot go on the wire cost a warning or a rejected future, not the actor."""

    @pytest.mark.parametrize("answer", [{1, 2}, float("nan")], ids=["set", "nan"])
    def test_an_unencodable_ask_answer_is_sent_as_none(self, answer: Any) -> None:
        """on_ask returning a set or NaN: a warning is logged and the ack answers None."""
        harness = connected(protocol="socketio")
        harness(io.FrameIn(1, "0{\"sid\":\"x\",\"pingInterval\":25000,\"pingTimeout\":5000}"))
        harness(io.FrameIn(1, "40{\"sid\":\"y\"}"))
        assert harness(io.Answer(1, 7, answer)) == [("write", 1, "437[]", None)]
        logs = [e for e in harness.effects if isinstance(e, io.Log)]
        assert [(log.level, log.event) for log in logs] == [("warning", "ask_answer_unencodable")]

    def test_text_that_is_not_utf8_is_rejected_not_written(self) -> None:
        """send() of a lone surrogate on a plain WebSocket fails its future with ValueError."""
        harness = connected()
        effects = harness(Send("\ud800", "s0"))
        assert ("reject", "s0", "ValueError") in effects
        assert not [e for e in effects if e[0] == "write"]
        assert harness(Send("ok", "s1")) == [("write", 1, "ok", 1)]


class TestWrittenAcrossGenerations:
    """A frame re-sent on a newer connection is settled by that connection's report only."""

    def test_a_late_written_from_the_closed_connection_is_ignored(self) -> None:
        """A send re-queued onto gen 2 by a Resume is not settled by gen 1's late Written."""
        harness = connected()
        harness(Send("a", "s0"))
        harness(Resume("t-1", "r1"))  # closes gen 1 gracefully; "a" goes back to the queue
        harness(io.ConnAdmitted(2))
        assert harness(io.ConnOpened(2, 0.0, 0.0))[-1] == ("write", 2, "a", 0)
        assert harness(io.FrameWritten(1, 0)) == []
        assert harness.state().outbox == 1
        assert harness(io.FrameWritten(2, 0)) == [("resolve", "s0", None)]
        assert harness.state().outbox == 0


def opened_first(harness: Harness) -> list[bool]:
    """``first`` of each connection the last input opened."""
    return [effect.first for effect in harness.effects if isinstance(effect, io.OpenConnection)]


class TestFirstConnects:
    """Admission tells a session's first connects from resumes and reconnects."""

    def test_first_connect_and_its_retries_are_first_until_connected(self) -> None:
        """The opening handshake and retries after it failed are first; none after ready."""
        harness = Harness(thread_id="t-0", session_id="m")
        harness(io.Start("open"))
        assert opened_first(harness) == [True]
        harness(io.ConnFailed(1, HandshakeError("refused")))
        harness(sup.Reconnect(1))
        assert opened_first(harness) == [True]
        harness.connect(2)
        harness(Resume("t-1", "r1"))
        assert opened_first(harness) == [False]

    def test_a_new_records_snapshot_still_makes_a_first_connect(self) -> None:
        """The actor hands a new session's record snapshot (generation 0) over: still first."""
        fresh = Harness(thread_id="t-0", session_id="m").state()
        harness = Harness(previous=fresh, thread_id="t-0", session_id="m")
        harness(io.Start("open"))
        assert opened_first(harness) == [True]

    def test_a_crash_successor_is_not_first(self) -> None:
        """An actor's successor reconnects a session that was live: a restart, not first."""
        harness = connected()
        harness(io.Crashed(RuntimeError("bug")))
        successor = Harness(previous=harness.state(), thread_id="t-0", session_id="m")
        successor(io.Start("restart"))
        assert opened_first(successor) == [False]
