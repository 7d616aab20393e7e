"""The clients ``bench_chat.py`` compares: how each is started, and how its result is read.

Every candidate plays the same scenario against the same target (see
``bench_chat.py``): N chat sessions started at one spawn rate, a turn every
``think`` seconds, a thread switch every ``resume_every`` seconds between two
threads, for ``duration`` seconds. Each one's own report gives the turns
completed, the failed sessions and the first-token latencies; everything else
(CPU, memory, connections) the runner measures from outside, the same way for
all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ARTILLERY_DIR = HERE / "artillery"
ARTILLERY_BIN = ARTILLERY_DIR / "node_modules" / ".bin" / "artillery"
NPM_INSTALL_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Scenario:
    """One size of the chat scenario, as every candidate is told it."""

    url: str
    sessions: int
    spawn_rate: float
    duration: float
    think_time: float
    resume_every: float
    protocol: str = "chainlit"
    """What the server speaks: ``chainlit`` (the embedded target) or ``websocket`` (the
    echo server, ``bench_chat.py --server echo``)."""


@dataclass(frozen=True)
class Outcome:
    """What a candidate's own report says (None: it does not say)."""

    turns: int
    turns_failed: int
    failed_sessions: int
    first_token_p50_ms: float | None
    first_token_p99_ms: float | None
    own_connected_peak: int | None = None
    handshakes: int | None = None
    """Connects the client made, first ones and thread switches (the server's work
    per connect is most of its cost: equal counts mean the same scenario)."""
    own_cpu_s: float | None = None
    """CPU seconds the client took by the end of its run, by its own count (Locust)."""


class Unavailable(Exception):
    """The candidate cannot run on this machine (the message says why)."""


def percentile(histogram: Mapping[float, int], fraction: float) -> float | None:
    """The smallest value with at least ``fraction`` of the counts at or below it."""
    total = sum(histogram.values())
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= wanted:
            return float(value)
    return float(max(histogram))


def _numeric(histogram: Mapping[str, int]) -> dict[float, int]:
    return {float(key): int(count) for key, count in histogram.items()}


# --- ours: supervisor loadtest ------------------------------------------------------


def _ours(runtime: str, *extra: str) -> Callable[[Scenario, Path], list[str]]:
    def command(scenario: Scenario, out: Path) -> list[str]:
        return [sys.executable, "-m", "supervisor", "loadtest", "--target", scenario.url,
                "--runtime", runtime, "--sessions", str(scenario.sessions),
                "--spawn-rate", f"{scenario.spawn_rate:g}", "--duration", f"{scenario.duration:g}",
                "--think-time", f"{scenario.think_time:g}",
                "--resume-every", f"{scenario.resume_every:g}", "--threads-per-session", "2",
                "--protocol", scenario.protocol, "--quiet", "--json", str(out), *extra]
    return command


def _read_ours(out: Path) -> Outcome:
    data: Any = json.loads(out.read_text())
    first = data["latency_ms"].get("first_token") or {}
    return Outcome(turns=data["counts"]["turns"], turns_failed=data["counts"]["turns_failed"],
                   failed_sessions=data["sessions"]["failed"],
                   first_token_p50_ms=first.get("p50"), first_token_p99_ms=first.get("p99"),
                   own_connected_peak=data["sessions"]["connected_peak"],
                   handshakes=data["counts"]["handshakes"])


# --- Locust on python-socketio's Client -------------------------------------------


def _locust(scenario: Scenario, out: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(HERE / "locust_sio_user.py"), "--headless",
            "--users", str(scenario.sessions), "--spawn-rate", f"{scenario.spawn_rate:g}",
            "--run-time", f"{round(scenario.duration)}s", "--host", scenario.url,
            "--only-summary", "--skip-log-setup"]


def locust_environment(_scenario: Scenario, out: Path) -> dict[str, str]:
    """Where ``locust_sio_user.py`` writes its figures as the run stops."""
    return {"BENCH_LOCUST_OUT": str(out)}


def _read_locust(out: Path) -> Outcome:
    data: Any = json.loads(out.read_text())
    named = {row["name"]: row for row in data["stats"]}
    turn = named.get("turn", {"num_requests": 0, "num_failures": 0})
    connect = named.get("connect", {"num_requests": 0, "num_failures": 0})
    resume = named.get("resume", {"num_requests": 0})
    first = _numeric(named.get("first_token", {}).get("response_times", {}))
    return Outcome(turns=turn["num_requests"] - turn["num_failures"],
                   turns_failed=turn["num_failures"], failed_sessions=connect["num_failures"],
                   first_token_p50_ms=percentile(first, 0.50),
                   first_token_p99_ms=percentile(first, 0.99), own_cpu_s=data["cpu_s"],
                   handshakes=connect["num_requests"] + resume["num_requests"])


# --- python-socketio AsyncClient --------------------------------------------------


def _asyncclient(scenario: Scenario, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "sio_async_chat.py"), "--url", scenario.url,
            "--sessions", str(scenario.sessions), "--spawn-rate", f"{scenario.spawn_rate:g}",
            "--duration", f"{scenario.duration:g}", "--think-time", f"{scenario.think_time:g}",
            "--resume-every", f"{scenario.resume_every:g}", "--out", str(out)]


def _read_asyncclient(out: Path) -> Outcome:
    data: Any = json.loads(out.read_text())
    first = _numeric(data["first_token_ms"])
    return Outcome(turns=data["turns"], turns_failed=data["turns_failed"],
                   failed_sessions=data["failed_sessions"],
                   first_token_p50_ms=percentile(first, 0.50),
                   first_token_p99_ms=percentile(first, 0.99),
                   own_connected_peak=data["connected_peak"],
                   handshakes=data.get("handshakes"))


# --- Artillery 2.x, socket.io engine ----------------------------------------------


def ensure_artillery() -> Path:
    """Install Artillery from ``artillery/package-lock.json`` into that folder on first use."""
    if ARTILLERY_BIN.exists():
        return ARTILLERY_BIN
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise Unavailable("artillery skipped: node and npm are not installed")
    try:
        # Artillery's browser engine (Playwright) would download Chromium: not used here.
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=ARTILLERY_DIR, capture_output=True, text=True, check=False,
                              timeout=NPM_INSTALL_TIMEOUT_S,
                              env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    except subprocess.TimeoutExpired:
        why = f"artillery skipped: npm ci took over {NPM_INSTALL_TIMEOUT_S:g}s"
        raise Unavailable(why) from None
    if done.returncode != 0 or not ARTILLERY_BIN.exists():
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise Unavailable(f"artillery skipped: npm ci failed ({tail})")
    return ARTILLERY_BIN


def artillery_script(scenario: Scenario) -> dict[str, Any]:
    """The Artillery test script for one run (JSON, which Artillery reads as YAML).

    The socket.io engine connects each virtual user with Chainlit's auth payload
    (``$uuid`` is Artillery's per-user id); ``artillery/chat.js`` plays the turns
    and thread switches on that socket.
    """
    ramp = max(1, round(scenario.sessions / scenario.spawn_rate))
    return {
        "config": {
            "target": scenario.url,
            "phases": [{"duration": ramp, "arrivalCount": scenario.sessions}],
            "processor": str(ARTILLERY_DIR / "chat.js"),
            "socketio": {"path": "/ws/socket.io", "transports": ["websocket"],
                         "reconnection": False},
        },
        "scenarios": [{
            "engine": "socketio",
            # Here, not under config: Artillery templates the config once at load,
            # so $uuid there would be the same (or empty) for every user.
            "socketio": {"auth": {"clientType": "webapp", "sessionId": "{{ $uuid }}",
                                  "threadId": "thread-a-{{ $uuid }}", "userEnv": "{}",
                                  "chatProfile": None}},
            "flow": [{"loop": [{"function": "step"}, {"think": scenario.think_time}],
                      "whileTrue": "running"}]}],
    }


def _artillery(scenario: Scenario, out: Path) -> list[str]:
    binary = ensure_artillery()
    script = out.with_suffix(".artillery.yml")
    script.write_text(json.dumps(artillery_script(scenario), indent=2))
    return [str(binary), "run", "--quiet", "--output", str(out), str(script)]


def artillery_environment(scenario: Scenario, _out: Path) -> dict[str, str]:
    """What ``artillery/chat.js`` reads, and no telemetry sent home."""
    return {"BENCH_DURATION_S": f"{scenario.duration:g}",
            "BENCH_RESUME_EVERY": f"{scenario.resume_every:g}",
            "ARTILLERY_DISABLE_TELEMETRY": "true"}


def _read_artillery(out: Path) -> Outcome:
    data: Any = json.loads(out.read_text())
    aggregate = data["aggregate"]
    counters = aggregate.get("counters", {})
    first = aggregate.get("summaries", {}).get("chat.first_token", {})
    return Outcome(turns=counters.get("chat.turns", 0),
                   turns_failed=counters.get("chat.turns_failed", 0),
                   # a user whose connect failed ends with an error: vusers.failed
                   failed_sessions=counters.get("vusers.failed", 0),
                   first_token_p50_ms=first.get("p50"), first_token_p99_ms=first.get("p99"),
                   handshakes=counters.get("chat.handshakes"))


@dataclass(frozen=True)
class Candidate:
    """One client under test."""

    name: str
    label: str
    command: Callable[[Scenario, Path], list[str]]
    read: Callable[[Path], Outcome]
    environment: Callable[[Scenario, Path], dict[str, str]] = lambda _scenario, _out: {}
    protocols: tuple[str, ...] = ("chainlit",)
    """The servers it can play the scenario against (``Scenario.protocol``)."""

    def env(self, scenario: Scenario, out: Path) -> dict[str, str]:
        return {**os.environ, "BENCH_THINK_TIME": f"{scenario.think_time:g}",
                "BENCH_RESUME_EVERY": f"{scenario.resume_every:g}",
                **self.environment(scenario, out)}


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("ours-gevent", "ours, gevent", _ours("gevent"), _read_ours,
              protocols=("chainlit", "websocket")),
    Candidate("ours-threads", "ours, threads", _ours("threads"), _read_ours,
              protocols=("chainlit", "websocket")),
    # The peers' thread switch is a reconnect that waits for no reply from the app;
    # ours by default also waits for the app's resume_thread (one more round trip
    # through a saturated server per connect). This row does what the peers do.
    Candidate("ours-gevent-unconfirmed", "ours, gevent, --no-confirm-resume",
              _ours("gevent", "--no-confirm-resume"), _read_ours, protocols=("chainlit",)),
    Candidate("locust", "Locust + python-socketio Client", _locust, _read_locust,
              locust_environment),
    Candidate("asyncclient", "python-socketio AsyncClient", _asyncclient, _read_asyncclient),
    Candidate("artillery", "Artillery 2 socket.io engine", _artillery, _read_artillery,
              artillery_environment),
)}
"""Every candidate, by the name ``--candidates`` takes (one source of truth)."""
