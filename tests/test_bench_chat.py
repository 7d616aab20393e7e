"""The chat-scenario benchmark (benchmarks/bench_chat.py) at a tiny size, so it cannot rot."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_chat.py"
SESSIONS = 5
DURATION_S = 5


def test_tiny_run_measures_every_candidate_it_runs(tmp_path: Path) -> None:
    """N=5 for 5 s: each candidate connects all 5, fails none, completes turns, is measured."""
    candidates = ["ours-gevent", "ours-gevent-unconfirmed"]
    if importlib.util.find_spec("aiohttp") is not None:  # python-socketio's asyncio transport
        candidates.append("asyncclient")
    out = tmp_path / "chat.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", str(SESSIONS), "--rounds", "1",
         "--duration", str(DURATION_S), "--ramp", "1", "--grace", "45",
         "--candidates", ",".join(candidates), "--json", str(out),
         "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [run["candidate"] for run in runs] == candidates
    for run in runs:
        assert run["status"] == "ok", run
        # The target's count can pass N while a thread switch's old socket closes.
        assert run["peak_connected"] >= SESSIONS, run
        assert run["own_connected_peak"] == SESSIONS, run
        assert run["failed_sessions"] == 0, run
        assert run["handshakes"] >= SESSIONS, run  # the first connects at least
        # A turn a second per session is the plan; a saturated core may allow far fewer.
        assert run["turns"] >= 1, run
        assert run["cpu_s"] > 0, run
        assert run["cpu_per_1000_turns"] > 0, run
        assert run["target_cpu_s"] > 0, run
        assert run["target_cpu_per_1000_turns"] > 0, run
        assert run["rss_peak_mib"] >= run["rss_baseline_mib"] > 0, run
        assert run["first_token_p50_ms"] is not None, run
        assert run["first_token_p99_ms"] >= run["first_token_p50_ms"], run
    assert f"| {SESSIONS} | ours, gevent | 1/1 |" in done.stdout


def test_tiny_run_against_the_echo_server(tmp_path: Path) -> None:
    """--server echo: ours plays WebSocket turns against echo_server.py; a peer that speaks
    only Socket.IO is skipped, and says why."""
    out = tmp_path / "echo.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--server", "echo", "--sizes", str(SESSIONS),
         "--rounds", "1", "--duration", str(DURATION_S), "--ramp", "1", "--grace", "45",
         "--candidates", "ours-gevent,locust", "--json", str(out),
         "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    [run] = saved["runs"]
    assert (run["candidate"], run["status"], run["failed_sessions"]) == ("ours-gevent", "ok", 0)
    assert run["own_connected_peak"] == SESSIONS, run
    assert run["turns"] >= 1, run
    assert "speaks websocket" in saved["skipped"]["locust"]


def _bench_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import one of benchmarks/*.py (they import each other by bare name)."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    return importlib.import_module(name)


def test_a_client_past_its_deadline_is_killed_and_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client still running at its deadline is killed, reaped and marked as such."""
    bench = _bench_module("bench_chat", monkeypatch)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            start_new_session=True)
    run = bench.Run("sleeper", 1, 1, status="ok")
    started = time.monotonic()
    stacks = tmp_path / "stacks.txt"
    status, usage = bench.watch_client(proc, 9, started + 1.0, run, stacks)  # port 9: unused
    assert status is None
    assert run.status == "killed at deadline"
    assert proc.returncode is not None
    assert proc.returncode < 0  # ended by a signal
    assert time.monotonic() - started < 30
    assert usage.ru_utime >= 0
    assert run.peak_connected == 0
    if stacks.exists():  # py-spy installed (the bench extra): its dump, or why it had none
        assert stacks.read_text().strip()


def test_percentiles_of_a_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    """Percentiles of a {value: count} histogram: the smallest value covering the fraction."""
    candidates = _bench_module("chat_candidates", monkeypatch)
    uniform = {float(value): 1 for value in range(1, 101)}
    assert candidates.percentile(uniform, 0.50) == 50.0
    assert candidates.percentile(uniform, 0.99) == 99.0
    assert candidates.percentile({5.0: 98, 900.0: 2}, 0.99) == 900.0
    assert candidates.percentile({}, 0.5) is None


def test_profile_top_counts_self_time_of_the_main_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """profile_top: a leaf's samples are its self time; --thread main keeps the lowest id."""
    profile = _bench_module("profile_top", monkeypatch)
    raw = tmp_path / "profile.raw"
    raw.write_text(
        "thread (100);run (gevent/hub.py);recv (gevent/_socketcommon.py) 6\n"
        "thread (100);run (gevent/hub.py) 3\n"
        "thread (100);run (gevent/hub.py);handle (supervisor/_streams.py) 1\n"
        "thread (205);worker (gevent/threadpool.py);acquire (gevent/_threading.py) 50\n")
    leaves, total = profile.parse(raw, "main")
    assert total == 10
    assert leaves[("recv", "gevent/_socketcommon.py")] == 6
    assert ("acquire", "gevent/_threading.py") not in leaves
    table = profile.tables(leaves, total, top=2)
    assert "| 1 | `recv` | gevent/_socketcommon.py | 60.0 |" in table
    assert "| gevent | 90.0 |" in table
    assert "| supervisor | 10.0 |" in table
    _, everything = profile.parse(raw)
    assert everything == 60
