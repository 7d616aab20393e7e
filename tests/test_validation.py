"""Validation before any I/O and redaction in logs (issue 8, I8)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hostile_server import HostileServer, echo_handler
from support import fast_policy

from supervisor import SessionSpec, Supervisor
from supervisor._logging import REDACTED, redact_secrets
from supervisor.spec import MAX_HEADER_VALUE_LENGTH, MAX_THREAD_ID_LENGTH

URL = "ws://127.0.0.1:1/"


def _field(name: str, bad: str) -> dict[str, Any]:
    """Spec keyword arguments that put ``bad`` into the field ``name``."""
    return {
        "url": {"url": f"ws://127.0.0.1:1/{bad}"},
        "thread_id": {"url": URL, "thread_id": bad},
        "header value": {"url": URL, "headers": {"X-A": bad}},
        "header name": {"url": URL, "headers": {bad: "v"}},
        "cookie value": {"url": URL, "cookies": {"c": bad}},
        "cookie name": {"url": URL, "cookies": {bad: "v"}},
        "thread_header": {"url": URL, "thread_header": bad},
        "session_id": {"url": URL, "session_id": bad},
        "socketio_path": {"url": URL, "protocol": "socketio", "socketio_path": bad},
        "namespace": {"url": URL, "protocol": "socketio", "namespace": f"/{bad}"},
        "client_type": {"url": URL, "protocol": "chainlit", "client_type": bad},
        "chat_profile": {"url": URL, "protocol": "chainlit", "chat_profile": bad},
        "user_env": {"url": URL, "protocol": "chainlit", "user_env": {"k": bad}},
    }[name]


FIELDS = ["url", "thread_id", "header value", "header name", "cookie value", "cookie name",
          "thread_header", "session_id", "socketio_path", "namespace", "client_type",
          "chat_profile", "user_env"]


class TestValidation:
    """Control characters, paths and lengths are refused in SessionSpec, before any I/O."""

    @pytest.mark.parametrize("field", FIELDS)
    @pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x7fb", "a\x85b", "a\x9bb"],
                             ids=["CR", "LF", "DEL", "NEL", "CSI"])
    def test_controls_are_refused_in_every_field(self, field: str, bad: str) -> None:
        """CR, LF, DEL and C1 controls (U+0080-U+009F) fail with ValueError."""
        with pytest.raises(ValueError, match=r"control character|invalid|must"):
            SessionSpec(**_field(field, bad))

    @pytest.mark.parametrize("path", ["a?b", "a#b", "a b", "../admin", "ws/../x", "a\\b"])
    def test_socketio_path_must_be_a_plain_path(self, path: str) -> None:
        """A path field cannot smuggle a query, a fragment, a space or a '..'."""
        with pytest.raises(ValueError, match="plain URL path"):
            SessionSpec(url=URL, protocol="socketio", socketio_path=path)

    def test_lengths_are_bounded(self) -> None:
        """A 1 MB thread id or an over-long header value is refused, not sent to get 431."""
        with pytest.raises(ValueError, match="over the limit"):
            SessionSpec(url=URL, thread_id="t" * 1_000_000)
        with pytest.raises(ValueError, match="over the limit"):
            SessionSpec(url=URL, headers={"X-A": "v" * (MAX_HEADER_VALUE_LENGTH + 1)})
        assert SessionSpec(url=URL, thread_id="t" * MAX_THREAD_ID_LENGTH).thread_id

    @pytest.mark.parametrize("name", ["write_timeout", "max_message_bytes",
                                      "inbound_max_frames", "inbound_max_bytes",
                                      "write_buffer_bytes"])
    def test_bounds_must_be_positive(self, name: str) -> None:
        """Every transport bound must be a positive number."""
        with pytest.raises(ValueError, match=name):
            SessionSpec(url=URL, **{name: 0})

    def test_resume_refuses_c1_before_io(self) -> None:
        """Session.resume refuses a thread id with a C1 control at once."""
        with HostileServer(echo_handler) as server, Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(), thread_id="t-ok"))
            session.resume("t-ok").get(timeout=10)
            with pytest.raises(ValueError, match="control character"):
                session.resume("t\x85x")
            assert server.connections == 1


class TestRedaction:
    """Secrets are redacted by name pattern in the library's log processor."""

    @pytest.mark.parametrize("name", ["Authorization", "Proxy-Authorization", "Cookie",
                                      "X-Api-Key", "api_key", "X-Auth-Token", "client_secret",
                                      "password", "X-Amz-Security-Token", "private-key"])
    def test_credential_headers_are_redacted_by_name(self, name: str) -> None:
        """A header or key whose name carries credentials has its value hidden."""
        event = redact_secrets(None, "debug", {"event": "connect", "headers": {name: "S3CR3T"},
                                               name: "S3CR3T"})
        assert event["headers"] == {name: REDACTED}
        assert event[name] == REDACTED

    def test_ordinary_fields_are_kept(self) -> None:
        """Ids and ordinary headers are not redacted."""
        fields = {"event": "x", "session_id": "s1", "thread_id": "t", "generation": 3,
                  "headers": {"Accept": "a", "X-Monkey": "m"}}
        assert redact_secrets(None, "debug", dict(fields)) == fields

    def test_url_query_secrets_are_redacted(self) -> None:
        """Secret-named query parameters lose their values wherever a URL is logged."""
        event = redact_secrets(None, "debug", {
            "event": "x", "url": "wss://h/ws?access_token=AAA&room=1&api_key=BBB",
            "reason": "handshake to ws://h/?token=CCC failed"})
        assert event["url"] == f"wss://h/ws?access_token={REDACTED}&room=1&api_key={REDACTED}"
        assert event["reason"] == f"handshake to ws://h/?token={REDACTED} failed"

    def test_a_real_session_logs_no_secret(self, caplog: pytest.LogCaptureFixture) -> None:
        """DEBUG logs of a session with a token in its URL and an API key header hide both."""
        with HostileServer(echo_handler) as server, \
                caplog.at_level(logging.DEBUG, logger="supervisor"), \
                Supervisor.start(fast_policy()) as sup:
            session = sup.open(SessionSpec(url=server.url(path="/ws?access_token=URL-SECRET"),
                                           headers={"X-Api-Key": "KEY-SECRET"}))
            session.resume(None).get(timeout=10)
        text = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
        assert "connect" in text
        assert "URL-SECRET" not in text
        assert "KEY-SECRET" not in text
