"""Lifecycle logging: bound session and thread ids, secrets redacted, no frames at INFO."""

from __future__ import annotations

import logging

import pytest
from recording_server import RecordingServer
from support import EventLog, fast_policy

from supervisor import SessionSpec, Supervisor


def test_lifecycle_is_logged_with_ids_and_without_frames_or_secrets(
        ws_server: RecordingServer, caplog: pytest.LogCaptureFixture) -> None:
    """connected/resume carry session_id and thread_id; frame text and cookies never appear."""
    log = EventLog()
    with caplog.at_level(logging.DEBUG, logger="supervisor"), \
            Supervisor.start(fast_policy()) as sup:
        session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-1", session_id="log-1",
                                       cookies={"access_token": "sekrit-token"}, on_event=log))
        session.resume("t-2").get(timeout=10)
        session.send("frame-text-xyz").get(timeout=10)
        log.wait_for_count(1)
    records = [r for r in caplog.records if r.name.startswith("supervisor")]
    by_event = {r.getMessage(): r for r in records}
    assert by_event["resume"].__dict__["session_id"] == "log-1"
    assert by_event["resume"].__dict__["thread_id"] == "t-2"
    connected = [r for r in records if r.getMessage() == "connected"]
    assert [r.__dict__["thread_id"] for r in connected][-1] == "t-2"
    assert all(r.levelno >= logging.INFO for r in connected)
    assert "frame-text-xyz" not in caplog.text
    assert "sekrit-token" not in caplog.text
    (connect, *_) = [r for r in records if r.getMessage() == "connect"]
    assert connect.__dict__["cookies"] == "[redacted]"  # logged, but redacted
    for record in records:
        assert "sekrit-token" not in repr(record.__dict__)
