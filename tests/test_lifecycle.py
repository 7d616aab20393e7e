"""Lifecycle reports: what a load test counts (handshakes, losses, restarts) and times."""

from __future__ import annotations

import threading

import pytest
from recording_server import RecordingServer
from support import fast_policy

from supervisor import Lifecycle, LifecycleKind, SessionSpec, Supervisor

pytestmark = pytest.mark.concurrency


class Recorder:
    """Collects lifecycle reports and wakes waiters."""

    def __init__(self) -> None:
        self.reports: list[Lifecycle] = []
        self.cond = threading.Condition()

    def __call__(self, report: Lifecycle) -> None:
        with self.cond:
            self.reports.append(report)
            self.cond.notify_all()

    def kinds(self) -> list[LifecycleKind]:
        return [report.kind for report in self.reports]

    def wait_for(self, kind: LifecycleKind, count: int = 1) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.kinds().count(kind) >= count, 10), self.kinds()


def test_connect_loss_restart_close_are_reported(ws_server: RecordingServer) -> None:
    """Each phase is reported in order, with timings on connect and the error kind on loss."""
    recorder = Recorder()
    with Supervisor.start(fast_policy()) as sup:
        session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-1",
                                       on_lifecycle=recorder))
        session.resume("t-1").get(timeout=10)
        recorder.wait_for(LifecycleKind.CONNECTED)
        ws_server.kill_all()
        recorder.wait_for(LifecycleKind.CONNECTED, count=2)
        session.close().get(timeout=10)
    assert recorder.kinds() == [
        LifecycleKind.CONNECTING, LifecycleKind.CONNECTED, LifecycleKind.LOST,
        LifecycleKind.RESTART, LifecycleKind.CONNECTING, LifecycleKind.CONNECTED,
        LifecycleKind.CLOSED,
    ]
    connected = recorder.reports[1]
    assert connected.thread_id == "t-1"
    assert set(connected.timings) == {"admission", "upgrade", "total"}
    assert all(value >= 0 for value in connected.timings.values())
    assert connected.timings["total"] >= connected.timings["upgrade"]
    lost = recorder.reports[2]
    assert lost.error == "ConnectionLost"
    assert lost.reason
