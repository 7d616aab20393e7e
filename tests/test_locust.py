"""supervisor.locust on Locust's engine: request events, exact merges, --processes, the docs."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chainlit_app.harness import free_port
from hdrh.histogram import HdrHistogram
from support import wait_until
from target_process import TargetProcess

from supervisor.loadtest.metrics import LATENCIES, new_histogram, summarize

pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="needs the [locust] extra")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
REQUESTS = ("connect", "resume", "first_token", "turn")
SHORT_LOAD = ("--users", "4", "--spawn-rate", "8", "--run-time", "3s", "--think-time", "0.1",
              "--resume-every", "0.5", "--only-summary")
"""A few seconds of load: every request name happens several times."""


@pytest.fixture(scope="module")
def target() -> Iterator[TargetProcess]:
    """The embedded target in its own process, shared by this module's runs."""
    with TargetProcess("--reply-tokens", "3") as server:
        yield server


def spawn(args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    """A child process whose output goes to ``log`` (no pipe to fill up)."""
    with log.open("wb") as handle:
        return subprocess.Popen(args, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", *args]


def finish(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> int:
    """The child's exit status; killed (and the test failed) past ``timeout``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"{proc.args!r} did not finish in {timeout}s:\n{log.read_text()[-3000:]}")


def locust_stats(prefix: Path) -> dict[str, dict[str, str]]:
    """Locust's own CSV statistics, by request name."""
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def merged_from(workers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each latency's summary recomputed from the workers' own histograms."""
    out = {}
    for name in LATENCIES:
        histogram = new_histogram()
        for worker in workers:
            if name in worker["histograms"]:
                histogram.add(HdrHistogram.decode(worker["histograms"][name]))
        out[name] = summarize(histogram)
    return out


@pytest.fixture(scope="module")
def run(target: TargetProcess, tmp_path_factory: pytest.TempPathFactory
        ) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("distributed")
    port = str(free_port())
    locustfile = str(EXAMPLES / "locust_chat.py")
    master = spawn(locust("-f", locustfile, "--master", "--headless",
                          "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                          "--expect-workers", "2", "--expect-workers-max-wait", "30",
                          "--host", target.url, *SHORT_LOAD, "--csv", str(folder / "locust"),
                          "--chat-json", str(folder / "chat.json")),
                   folder / "master.log", folder)
    workers = [spawn(locust("-f", locustfile, "--worker", "--master-host", "127.0.0.1",
                            "--master-port", port), folder / f"worker{n}.log", folder,
                     {"SUPERVISOR_LOCUST_WORKER_JSON": str(folder / "worker-{worker}.json")})
               for n in range(2)]
    status = finish(master, folder / "master.log")
    for number, worker in enumerate(workers):
        finish(worker, folder / f"worker{number}.log", 30.0)
    assert status == 0, (folder / "master.log").read_text()[-3000:]
    return {"folder": folder,
            "chat": json.loads((folder / "chat.json").read_text()),
            "workers": [json.loads((folder / f"worker-{n}.json").read_text())
                        for n in range(2)]}


class TestDistributedRun:
    """`locust --master` and two `--worker` processes over TCP on 127.0.0.1."""

    def test_every_request_name_has_counts_and_real_times(self, run: dict[str, Any]) -> None:
        """Locust's CSV shows connect, resume, first_token and turn, counted and timed."""
        stats = locust_stats(run["folder"] / "locust")
        for name in REQUESTS:
            assert name in stats, sorted(stats)
            assert stats[name]["Type"] == "chainlit"
            assert int(stats[name]["Request Count"]) > 0, name
            assert float(stats[name]["Average Response Time"]) > 0.0, name
            assert float(stats[name]["Min Response Time"]) > 0.0, name

    def test_both_workers_ran_sessions(self, run: dict[str, Any]) -> None:
        """Each worker played sessions and sent its final report; none was lost."""
        chat = run["chat"]
        assert chat["distributed"]["workers"] == 2
        assert chat["distributed"]["lost_workers"] == []
        assert all(worker["sessions"]["started"] > 0 for worker in run["workers"])
        assert all(item["final_report"] for item in chat["workers"].values())

    def test_merged_counts_are_the_sum_of_the_workers(self, run: dict[str, Any]) -> None:
        """Every count in the master's report is the sum of the two workers' counts."""
        totals: Counter[str] = Counter()
        for worker in run["workers"]:
            totals.update({key: value for key, value in worker["counts"].items()
                           if key != "errors"})
        counts = run["chat"]["counts"]
        assert totals["turns"] > 0
        assert totals["resumes"] > 0
        for key, total in totals.items():
            assert counts.get(key, 0) == total, key
        started = sum(worker["sessions"]["started"] for worker in run["workers"])
        assert run["chat"]["sessions"]["started"] == started == 4

    def test_percentiles_come_from_the_merged_histograms(self, run: dict[str, Any]) -> None:
        """The master's latency figures equal a recomputation from the workers' histograms."""
        recomputed = merged_from(run["workers"])
        assert recomputed["turn"]["count"] > 0
        assert run["chat"]["latency_ms"] == recomputed


class TestLocustfiles:
    """The documented locustfiles run as a new user would run them."""

    def test_two_line_locustfile(self, target: TargetProcess, tmp_path: Path) -> None:
        """`from supervisor.locust import ChainlitUser` and an empty subclass chat and resume."""
        locustfile = tmp_path / "locustfile.py"
        locustfile.write_text((EXAMPLES / "locust_chat.py").read_text())
        assert len(locustfile.read_text().splitlines()) == 2
        proc = spawn(locust("--headless", "--host", target.url, *SHORT_LOAD, "--chat-json",
                            "chat.json", "--json-file", "locust"), tmp_path / "run.log", tmp_path)
        assert finish(proc, tmp_path / "run.log") == 0, (tmp_path / "run.log").read_text()
        chat = json.loads((tmp_path / "chat.json").read_text())
        assert chat["counts"]["turns"] > 0
        assert chat["counts"]["resumes"] > 0
        assert chat["settings"]["think_time"] == 0.1
        # Locust's final statistics (its CSV is rewritten only every second) count
        # exactly the turns our report holds.
        stats = {row["name"]: row for row in json.loads((tmp_path / "locust.json").read_text())}
        assert stats["turn"]["num_requests"] == chat["latency_ms"]["turn"]["count"]

    def test_bad_option_stops_a_headless_run_at_once(self, target: TargetProcess,
                                                     tmp_path: Path) -> None:
        """A bad value exits 2 before any user starts, with loadtest's message."""
        proc = spawn(locust("-f", str(EXAMPLES / "locust_chat.py"), "--headless", "--host",
                            target.url, "--run-time", "30s", "--think-time", "-1"),
                     tmp_path / "run.log", tmp_path)
        log = tmp_path / "run.log"
        assert finish(proc, log, 30.0) == 2, log.read_text()
        assert "--think-time must be a duration of 0s or more" in log.read_text()

    def test_own_conversation_replaces_the_default_step(self, target: TargetProcess,
                                                        tmp_path: Path) -> None:
        """A user's own task chats twice per resume pair, measured like the default one."""
        proc = spawn(locust("-f", str(EXAMPLES / "locust_conversation.py"), "--headless",
                            "--host", target.url, "--users", "2", "--spawn-rate", "4",
                            "--run-time", "2s", "--only-summary", "--chat-json", "chat.json"),
                     tmp_path / "run.log", tmp_path)
        assert finish(proc, tmp_path / "run.log") == 0, (tmp_path / "run.log").read_text()
        counts = json.loads((tmp_path / "chat.json").read_text())["counts"]
        assert counts["turns"] >= 2
        assert counts["resumes"] >= 2
        assert counts["turns_failed"] == 0


class TestGuide:
    """docs/distributed.md shows the example locustfiles the tests run, verbatim."""

    @pytest.mark.parametrize("name", ["locust_chat.py", "locust_conversation.py"])
    def test_guide_embeds_the_example(self, name: str) -> None:
        """The guide's code block is the example file, so the docs cannot rot."""
        guide = (ROOT / "docs" / "distributed.md").read_text()
        assert (EXAMPLES / name).read_text().strip() in guide


class TestOtherProtocols:
    """SocketIOUser and WebSocketUser play the same scenario over their protocols."""

    def test_socketio_and_websocket_users(self, target: TargetProcess, tmp_path: Path) -> None:
        """Both classes in one locustfile, each with its own host: turns and resumes, typed."""
        ws_url = target.url.replace("http://", "ws://") + "/ws/echo"
        (tmp_path / "locustfile.py").write_text(
            "from supervisor.locust import SocketIOUser, WebSocketUser\n\n\n"
            f"class Echo(WebSocketUser):\n    host = {ws_url!r}\n\n\n"
            f"class Chat(SocketIOUser):\n    host = {target.url + '/ws/socket.io'!r}\n"
            "    options = {'emit_event': 'client_message'}\n")
        proc = spawn(locust("--headless", *SHORT_LOAD, "--json-file", "stats"),
                     tmp_path / "run.log", tmp_path)
        assert finish(proc, tmp_path / "run.log") == 0, (tmp_path / "run.log").read_text()
        rows = json.loads((tmp_path / "stats.json").read_text())
        seen = {(row["method"], row["name"]) for row in rows if row["num_requests"]}
        for protocol in ("websocket", "socketio"):
            assert {(protocol, name) for name in REQUESTS} <= seen, seen
        assert all(row["num_failures"] == 0 for row in rows)


class TestFailures:
    """Failed requests reach Locust typed and timed."""

    def test_failures_carry_their_error_type_and_time(self, tmp_path: Path) -> None:
        """Slow replies fail turns as Timeout after --turn-timeout; refusals fail connects."""
        with TargetProcess("--reply-tokens", "3", "--token-delay", "0.2",
                           "--refuse-probability", "0.3", "--seed", "1") as slow:
            proc = spawn(locust("-f", str(EXAMPLES / "locust_chat.py"), "--headless",
                                "--host", slow.url, *SHORT_LOAD, "--turn-timeout", "0.3",
                                "--csv", "locust", "--json-file", "stats"),
                         tmp_path / "run.log", tmp_path)
            log = tmp_path / "run.log"
            assert finish(proc, log) == 1, log.read_text()  # Locust: 1 when requests failed
        assert "Traceback" not in log.read_text()
        with (tmp_path / "locust_failures.csv").open(newline="") as handle:
            errors = {(row["Name"], row["Error"].split("(")[0]) for row in csv.DictReader(handle)}
        assert ("turn", "Timeout") in errors
        assert ("connect", "ProtocolRefused") in errors
        stats = {row["name"]: row for row in json.loads((tmp_path / "stats.json").read_text())}
        assert stats["turn"]["num_failures"] > 0
        assert stats["turn"]["min_response_time"] >= 300.0  # the time it took, never 0


def loadtest(*args: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", "loadtest", "--processes", "2", "--sessions",
            "4", "--spawn-rate", "8", "--think-time", "0.1", "--resume-every", "0.5", *args]


class TestProcessesOption:
    """`supervisor loadtest --processes 2`, end to end in a subprocess."""

    def test_runs_and_reports_both_workers(self, tmp_path: Path) -> None:
        """Exit 0, and the report holds both workers' sessions (embedded target)."""
        proc = spawn(loadtest("--duration", "3", "--json", "r.json", "--html", "r.html"),
                     tmp_path / "run.log", tmp_path)
        log = tmp_path / "run.log"
        assert finish(proc, log, 90.0) == 0, log.read_text()[-3000:]
        report = json.loads((tmp_path / "r.json").read_text())
        workers = list(report["workers"].values())
        assert len(workers) == 2
        assert all(worker["sessions"]["started"] > 0 for worker in workers)
        assert sum(worker["sessions"]["started"] for worker in workers) == (
            report["sessions"]["started"]) == 4
        assert report["counts"]["turns"] > 0
        assert report["settings"]["processes"] == 2
        assert "latency (ms)" in log.read_text()
        assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")

    def _start_run(self, target: TargetProcess, tmp_path: Path, duration: int, *extra: str
                   ) -> tuple[subprocess.Popen[bytes], list[int]]:
        """A run against ``target``, once its sessions have connected; its worker pids."""
        before = len(target.handshakes())
        proc = spawn(loadtest("--target", target.url, "--duration", str(duration), "--json",
                              "r.json", *extra),
                     tmp_path / "run.log", tmp_path)
        log = tmp_path / "run.log"
        wait_until(lambda: "worker processes (pids" in log.read_text(), 30.0, "the pids line")
        wait_until(lambda: len(target.handshakes()) >= before + 4, 30.0, "4 handshakes")
        line = next(line for line in log.read_text().splitlines() if "(pids" in line)
        pids = [int(pid) for pid in line.split("(pids ")[1].split(")")[0].split()]
        return proc, pids

    def test_ctrl_c_still_writes_the_report(self, target: TargetProcess, tmp_path: Path) -> None:
        """SIGINT mid-run: the workers' final reports are collected and the report written."""
        proc, _ = self._start_run(target, tmp_path, 30)
        proc.send_signal(signal.SIGINT)
        log = tmp_path / "run.log"
        assert finish(proc, log, 45.0) == 0, log.read_text()[-3000:]
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["exit"]["interrupted"] is True
        assert report["duration_s"] < 25
        assert report["counts"]["handshakes"] >= 4
        assert all(item["final_report"] for item in report["workers"].values())

    def test_a_killed_worker_is_reported_not_waited_for(self, target: TargetProcess,
                                                         tmp_path: Path) -> None:
        """SIGKILL one worker: the run ends on time, the report names the lost worker.

        The lost worker is one error by design: the error-rate threshold is lifted,
        or the exit status would follow how many operations a slow machine made
        (1 of 96, 1.04 %, failed the default 1 % once).
        """
        proc, pids = self._start_run(target, tmp_path, 6, "--fail-on-error-rate", "0.5")
        os.kill(pids[0], signal.SIGKILL)
        log = tmp_path / "run.log"
        assert finish(proc, log, 60.0) == 0, log.read_text()[-3000:]
        report = json.loads((tmp_path / "r.json").read_text())
        lost = report["distributed"]["lost_workers"]
        assert len(lost) == 1
        assert report["workers"][lost[0]]["pid"] == pids[0]
        assert report["counts"]["errors"].get("worker_lost") == 1
        assert f"pid {pids[0]}) exited with status -9" in log.read_text()
