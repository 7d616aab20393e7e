"""A connection that ends is freed by reference counting, not left to the cycle collector.

Cyclic garbage waits for a collection, and a full one visits every container of
every session (0.2-0.35 s at 5,000 sessions, docs/benchmarks.md). A session that
resumes every few seconds ends a connection each time, so a cycle among a
connection's objects is garbage made at the rate of the resumes; the commands
also enlarge the young generation (``supervisor._collector``), which lets it
wait longer. ``cycle_probe.py`` resumes real sessions against a real server,
in its own process, with the collector keeping what it finds
(``gc.DEBUG_SAVEALL``); none of it may be ours or websocket-client's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from recording_server import RecordingServer
from support import python_prints
from target_process import TargetProcess

from supervisor._admission import Admission

PROBE = Path(__file__).with_name("cycle_probe.py")
RUNTIMES = ["threads", "gevent"]


def _cyclic_garbage(runtime: str, protocol: str, url: str) -> dict[str, int]:
    done = subprocess.run([sys.executable, str(PROBE), runtime, protocol, url],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_websocket_connections_leave_no_cycles(runtime: str, ws_server: RecordingServer) -> None:
    found = _cyclic_garbage(runtime, "websocket", ws_server.url)
    assert not found, f"cyclic garbage: {found}"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_chainlit_connections_leave_no_cycles(runtime: str) -> None:
    with TargetProcess() as target:
        found = _cyclic_garbage(runtime, "chainlit", target.url)
    assert not found, f"cyclic garbage: {found}"


def test_an_admission_ticket_lets_go_of_its_requester() -> None:
    """Admitted or withdrawn, a ticket no longer holds the requester's ``start``."""
    admission = Admission(max_in_flight=1, max_per_second=1000.0)
    started: list[str] = []
    first = admission.request(lambda: started.append("first"))
    waiting = admission.request(lambda: started.append("second"))
    assert first is not None
    assert waiting is not None
    assert started == ["first"]
    assert admission.cancel(waiting)
    for ticket in (first, waiting):
        ticket.start()  # the spent placeholder: calls nobody
    assert started == ["first"]


def test_the_commands_collector_settings() -> None:
    """``settle`` freezes start-up's objects and enlarges the young generation; cyclic
    garbage made afterwards is still collected."""
    script = (
        "import gc\n"
        "from supervisor import _collector\n"
        "_collector.settle()\n"
        "frozen = gc.get_freeze_count()\n"
        "cycle = []; cycle.append(cycle); del cycle\n"
        "print(gc.get_threshold()[0], frozen > 1000, gc.collect() >= 1)\n")
    printed = python_prints(script)
    from supervisor._collector import YOUNG_THRESHOLD  # noqa: PLC0415

    assert printed.split() == [str(YOUNG_THRESHOLD), "True", "True"]
