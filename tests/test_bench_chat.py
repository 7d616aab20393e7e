"""The chat-scenario benchmark (benchmarks/bench_chat.py) at a tiny size, so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_chat.py"
SESSIONS = 5
DURATION_S = 5


def test_tiny_run_measures_every_candidate_it_runs(tmp_path: Path) -> None:
    """N=5 for 5 s: each candidate connects all 5, fails none, completes turns, is measured."""
    candidates = ["ours-gevent"]
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
        assert run["peak_connected"] == SESSIONS, run
        assert run["failed_sessions"] == 0, run
        # A turn a second per session after the ramp: well over one per session.
        assert run["turns"] >= SESSIONS, run
        assert run["cpu_s"] > 0, run
        assert run["cpu_per_1000_turns"] > 0, run
        assert run["rss_peak_mib"] >= run["rss_baseline_mib"] > 0, run
        assert run["first_token_p50_ms"] is not None, run
        assert run["first_token_p99_ms"] >= run["first_token_p50_ms"], run
    assert f"| {SESSIONS} | ours, gevent | 1/1 |" in done.stdout
