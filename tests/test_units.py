"""Unit tests of pure code: spec validation, policy, budget, admission, codec, redaction."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import supervisor
from supervisor import HandshakeRefused, ProtocolRefused, RestartPolicy, RestartType, SessionSpec
from supervisor._logging import REDACTED, get_logger, redact_secrets
from supervisor.policy import RestartBudget
from supervisor.protocols import Identity, make_codec
from supervisor.protocols.base import Inbound, Ready


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


class Ceiling:
    """A random source that always draws the top of the range: exact, checkable delays."""

    def uniform(self, a: float, b: float) -> float:
        return b


class TestPublicSurface:
    """The public names are exactly those DESIGN.md promises (plus typed errors)."""

    def test_all_is_pinned(self) -> None:
        """An accidental export or a lost name fails here."""
        assert sorted(supervisor.__all__) == sorted([
            "ConnectionLost", "DeadlineExceeded", "Event", "EventsOverflowed", "HandshakeError",
            "HandshakeRedirected", "HandshakeRefused", "Lifecycle", "LifecycleKind",
            "MalformedAck", "MessageTooBig", "OutboxFull",
            "ProtocolRefused", "ReplyTimeout", "RestartPolicy", "RestartType", "ResumeResult",
            "ResumeTimeout", "SendTimeout", "Session",
            "SessionClosed", "SessionCrashed", "SessionFailed", "SessionSpec", "SessionState",
            "SessionStatus", "Supervisor", "SupervisorError", "SupervisorStopped",
        ])

    def test_every_error_has_one_root(self) -> None:
        """Every exported error derives from SupervisorError."""
        errors = [getattr(supervisor, name) for name in supervisor.__all__
                  if isinstance(getattr(supervisor, name), type)
                  and issubclass(getattr(supervisor, name), Exception)]
        assert len(errors) == 18
        assert all(issubclass(error, supervisor.SupervisorError) for error in errors)
        # errors.py is the one list: every error it defines is exported.
        defined = {name for name, value in vars(supervisor.errors).items()
                   if isinstance(value, type) and issubclass(value, Exception)
                   and value.__module__ == "supervisor.errors"}
        assert defined == {error.__name__ for error in errors}
        assert not issubclass(supervisor.SessionClosed, supervisor.ConnectionLost)


class TestSessionSpec:
    """SessionSpec refuses bad input with a clear message, before any I/O."""

    @pytest.mark.parametrize("url", ["http://x/ws", "127.0.0.1:80", "ws://", "", "ws:/x"])
    def test_bad_urls(self, url: str) -> None:
        """Plain WebSocket sessions take only ws:// and wss:// URLs with a host."""
        with pytest.raises(ValueError, match="url must be"):
            SessionSpec(url=url)

    def test_socketio_takes_http_base_urls(self) -> None:
        """Socket.IO and Chainlit servers may be named by their HTTP base URL."""
        assert SessionSpec(url="http://x:8000", protocol="chainlit").url == "http://x:8000"
        with pytest.raises(ValueError, match="url must be"):
            SessionSpec(url="ftp://x", protocol="socketio")

    def test_unknown_protocol(self) -> None:
        """A protocol name outside the three fails, naming the valid ones."""
        with pytest.raises(ValueError, match="websocket, socketio, chainlit"):
            SessionSpec(url="ws://h/ws", protocol="mqtt")  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["Bad Name", "X:Y", "", "X\r\n"])
    def test_bad_header_names(self, name: str) -> None:
        """Header names with separators or control characters are refused."""
        with pytest.raises(ValueError, match="header name"):
            SessionSpec(url="ws://h/ws", headers={name: "v"})

    def test_empty_thread_id_is_refused(self) -> None:
        """An empty thread id is refused; None is how to ask for a new conversation."""
        with pytest.raises(ValueError, match="use None"):
            SessionSpec(url="ws://h/ws", thread_id="")

    def test_headers_are_frozen_copies(self) -> None:
        """Mutating the caller's dict later cannot change the session's identity."""
        headers = {"X-A": "1"}
        spec = SessionSpec(url="ws://h/ws", headers=headers)
        headers["X-A"] = "2"
        assert spec.headers["X-A"] == "1"
        with pytest.raises(TypeError):
            spec.headers["X-A"] = "3"  # type: ignore[index]

    @pytest.mark.parametrize(("field", "value"), [("connect_timeout", 0), ("outbox_limit", -1)])
    def test_bad_numbers(self, field: str, value: float) -> None:
        """Non-positive timeouts and negative limits are refused by name."""
        with pytest.raises(ValueError, match=field):
            SessionSpec(url="ws://h/ws", **{field: value})


class TestRestartPolicy:
    """Backoff delays and give-up decisions are exact with injected randomness."""

    def test_full_jitter_below_a_doubling_ceiling_capped(self) -> None:
        """Ceilings double from the base and stop at the cap; the draw is below the ceiling."""
        policy = RestartPolicy(backoff_base=0.5, backoff_cap=4.0, rng=Ceiling())
        assert [policy.backoff(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]

    def test_jitter_draws_from_zero(self) -> None:
        """Full jitter: the range starts at zero, not at half the ceiling."""
        draws: list[tuple[float, float]] = []

        class Recorder:
            def uniform(self, a: float, b: float) -> float:
                draws.append((a, b))
                return a

        policy = RestartPolicy(backoff_base=1.0, backoff_cap=8.0, rng=Recorder())
        assert policy.backoff(10) == 0.0
        assert draws == [(0.0, 8.0)]

    def test_huge_attempt_does_not_overflow(self) -> None:
        """A session restarted thousands of times still gets the cap, not an OverflowError."""
        policy = RestartPolicy(backoff_cap=30.0, rng=Ceiling())
        assert policy.backoff(10_000) == 30.0

    @pytest.mark.parametrize("status", [401, 403])
    def test_credential_refusals_give_up(self, status: int) -> None:
        """401 and 403 are fatal by default, with the status in the reason."""
        reason = RestartPolicy().give_up_reason(HandshakeRefused(status), clean=False)
        assert reason is not None
        assert str(status) in reason

    def test_server_errors_are_retried(self) -> None:
        """A 503 and a lost connection are retried by a permanent policy."""
        policy = RestartPolicy()
        assert policy.give_up_reason(HandshakeRefused(503), clean=False) is None
        assert policy.give_up_reason(ConnectionError("reset"), clean=False) is None

    def test_protocol_refusal_gives_up(self) -> None:
        """A protocol-level refusal (Socket.IO 44) is not retried."""
        reason = RestartPolicy().give_up_reason(ProtocolRefused("no auth"), clean=False)
        assert reason == "refused by the server: no auth"

    def test_restart_types(self) -> None:
        """Temporary never restarts; transient restarts only after an abnormal end."""
        temporary = RestartPolicy(restart=RestartType.TEMPORARY)
        transient = RestartPolicy(restart=RestartType.TRANSIENT)
        assert temporary.give_up_reason(None, clean=False) is not None
        assert transient.give_up_reason(None, clean=True) is not None
        assert transient.give_up_reason(ConnectionError("x"), clean=False) is None

    def test_defaults_tolerate_a_flaky_network(self) -> None:
        """DESIGN.md: at least 10 restarts a minute, 100 in flight, 500 per second."""
        policy = RestartPolicy()
        assert policy.max_restarts / policy.restart_window * 60 >= 10
        assert policy.max_handshakes_in_flight >= 100
        assert policy.max_handshakes_per_second >= 500

    def test_invalid_settings(self) -> None:
        """Non-positive settings fail naming the field."""
        with pytest.raises(ValueError, match="backoff_cap"):
            RestartPolicy(backoff_cap=0)


class TestRestartBudget:
    """The per-session budget counts restarts in a sliding window."""

    def test_budget_exhausts_and_recovers_with_the_window(self) -> None:
        """Three restarts fit in the window; the fourth does not until the window slides."""
        clock = FakeClock()
        budget = RestartBudget(RestartPolicy(max_restarts=3, restart_window=60, clock=clock))
        assert [budget.spend(None) for _ in range(3)] == [True, True, True]
        assert budget.spend(None) is False
        clock.now += 61
        assert budget.spend(None) is True

    def test_exponent_grows_and_resets_after_a_stable_connection(self) -> None:
        """Delays double per restart and fall back to the base after a long-lived connection."""
        policy = RestartPolicy(backoff_base=1, backoff_cap=100, reset_after=30, rng=Ceiling(),
                               clock=FakeClock())
        budget = RestartBudget(policy)
        delays = []
        for _ in range(3):
            budget.spend(uptime=1.0)
            delays.append(budget.next_delay())
        budget.spend(uptime=45.0)
        delays.append(budget.next_delay())
        assert delays == [1, 2, 4, 1]

    def test_refund(self) -> None:
        """A preempted restart gives its budget and its exponent step back."""
        budget = RestartBudget(RestartPolicy(max_restarts=1, clock=FakeClock(), rng=Ceiling()))
        assert budget.spend(None)
        budget.next_delay()
        budget.refund()
        assert budget.attempt == 0
        assert budget.spend(None)


class TestWebSocketCodec:
    """The plain WebSocket codec: identity to handshake, frames to events (pure)."""

    def test_handshake_carries_identity_headers_and_cookies(self) -> None:
        """The thread header comes from the identity, cookies from the spec."""
        spec = SessionSpec(url="ws://h/ws", headers={"X-App": "1"}, cookies={"a": "b", "c": "d"})
        handshake = make_codec(spec.protocol_config, Identity("t-7")).handshake()
        assert handshake.headers == (("X-App", "1"), ("X-Chainlit-Thread-Id", "t-7"))
        assert handshake.cookie_header() == "a=b; c=d"

    def test_frames_round_trip(self) -> None:
        """Open is ready at once; a frame is one message event; send encodes text as is."""
        codec = make_codec(SessionSpec(url="ws://h/ws").protocol_config, Identity(None))
        assert codec.opened() == [Ready()]
        assert codec.received("hi") == [Inbound("message", "hi")]
        assert codec.received(b"\x00") == [Inbound("message", b"\x00")]
        assert codec.encode(None, "hi") == ["hi"]
        with pytest.raises(TypeError, match="emit"):
            codec.encode("event", "hi")


class TestRedaction:
    """Secrets never leave the library's loggers."""

    def test_processor_redacts_by_key_and_header_name(self) -> None:
        """Cookie, token and Authorization values are replaced, the rest kept."""
        event: dict[str, Any] = {
            "event": "connect", "cookie": "a=b", "access_token": "x",
            "headers": [("Authorization", "Bearer y"), ("X-App", "1")],
            "nested": {"password": "p", "user": "u"},
        }
        redacted = redact_secrets(None, "info", event)
        assert redacted == {
            "event": "connect", "cookie": REDACTED, "access_token": REDACTED,
            "headers": [("Authorization", REDACTED), ("X-App", "1")],
            "nested": {"password": REDACTED, "user": "u"},
        }

    def test_library_logger_redacts_without_configuration(
            self, caplog: pytest.LogCaptureFixture) -> None:
        """With no structlog configuration at all, a logged cookie arrives redacted."""
        with caplog.at_level(logging.INFO, logger="supervisor.test"):
            get_logger("supervisor.test").info("connect", cookie="secret-value")
        (record,) = caplog.records
        assert record.__dict__["cookie"] == REDACTED
        assert "secret-value" not in caplog.text
