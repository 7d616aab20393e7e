"""The ``supervisor`` command, run in subprocesses as a new user would run it.

Every run is bounded: short durations and a subprocess timeout, so a hang
fails the test instead of stalling the suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import python_prints

from supervisor.target import TargetServer

RUN_TIMEOUT = 90.0  # a fresh interpreter plus the embedded target, on a loaded machine
ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without SUPERVISOR_* settings from outside the test."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SUPERVISOR_")}
    env.update(extra)
    return env


def supervisor(*args: str, env: dict[str, str] | None = None,
               timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m supervisor ARGS`` to completion (bounded)."""
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, env=env or clean_env(),
                          cwd=ROOT)


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def assert_worked(result: subprocess.CompletedProcess[str], report: dict[str, Any]) -> None:
    """Exit 0, and the report shows handshakes, resumes, replies and first-token times."""
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    assert "Traceback" not in result.stderr
    counts = report["counts"]
    assert counts["handshakes"] > 0
    assert counts["resumes"] > 0
    assert counts["replies"] > 0
    assert report["latency_ms"]["first_token"]["p50"] > 0
    assert report["exit"]["passed"] is True


@pytest.fixture(scope="module")
def embedded() -> Iterator[TargetServer]:
    """An embedded target in this process, for the wrong-protocol case."""
    with TargetServer() as server:
        yield server


class TestDefaultRun:
    """``supervisor loadtest`` with (almost) no arguments."""

    def test_default_command_end_to_end(self, tmp_path: Path) -> None:
        """The embedded target, chainlit, live output, a summary, a full JSON report, exit 0."""
        report_path = tmp_path / "report.json"
        result = supervisor("loadtest", "--duration", "4", "--sessions", "20",
                            "--json", str(report_path))
        report = read_report(report_path)
        assert_worked(result, report)
        assert report["target"]["embedded"] is True
        assert report["sessions"]["connected_peak"] == 20
        assert report["latency_ms"]["turn"]["p99"] >= report["latency_ms"]["turn"]["p50"]
        assert report["intervals"]
        assert "first session connected" in result.stdout
        assert "latency (ms)" in result.stdout

    def test_gevent_runtime_end_to_end(self, tmp_path: Path) -> None:
        """--runtime gevent patches first (in place) and runs the same test."""
        report_path = tmp_path / "report.json"
        result = supervisor("loadtest", "--runtime", "gevent", "--duration", "3", "--sessions",
                            "10", "--seed", "1", "--json", str(report_path))
        report = read_report(report_path)
        assert_worked(result, report)
        assert report["resources"]["runtime"] == "gevent"
        assert report["resources"]["gevent_patched"] is True

    def test_the_command_imports_nothing_gevent_must_patch_first(self) -> None:
        """``python -m supervisor`` reaches ``main`` with none of the patch-sensitive modules
        loaded, so --runtime gevent patches in place (no second interpreter start-up)."""
        probe = ("import sys, supervisor, supervisor.cli, supervisor.__main__, "
                 "supervisor.target.command; "
                 "print(sorted(set(supervisor.cli._PATCH_SENSITIVE) & set(sys.modules)))")
        assert python_prints(probe, timeout=RUN_TIMEOUT, cwd=ROOT).strip() == "[]"

    def test_gevent_runtime_restarts_python_when_too_late_to_patch(self, tmp_path: Path) -> None:
        """With websocket-client imported before ``main``, --runtime gevent restarts the
        interpreter patched first, and the run works as from the command line."""
        report_path = tmp_path / "report.json"
        launch = ("import sys, websocket; from supervisor.cli import main; "
                  "sys.exit(main(sys.argv[1:]))")
        result = subprocess.run(
            [sys.executable, "-c", launch, "loadtest", "--runtime", "gevent", "--duration", "3",
             "--sessions", "10", "--seed", "1", "--json", str(report_path)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False, env=clean_env(),
            cwd=ROOT)
        report = read_report(report_path)
        assert_worked(result, report)
        assert report["resources"]["gevent_patched"] is True

    def test_config_file_and_environment(self, tmp_path: Path) -> None:
        """File < environment < flag, end to end; CSV has one row per interval."""
        config = tmp_path / "load.toml"
        config.write_text('[loadtest]\nsessions = 9\nspawn-rate = 50\nduration = 30\n'
                          'think_time = 0.2\nprotocol = "websocket"\n')
        report_path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
        result = supervisor("loadtest", "--config", str(config), "--sessions", "3",
                            "--json", str(report_path), "--csv", str(csv_path), "--quiet",
                            env=clean_env(SUPERVISOR_DURATION="2", SUPERVISOR_SESSIONS="5",
                                          SUPERVISOR_RESUME_EVERY="0.5"))
        assert result.returncode == 0, result.stderr
        settings = read_report(report_path)["settings"]
        assert (settings["sessions"], settings["duration"], settings["spawn_rate"]) == (3, 2.0,
                                                                                         50.0)
        assert (settings["protocol"], settings["think_time"]) == ("websocket", 0.2)
        report = read_report(report_path)
        assert_worked(result, report)
        rows = csv_path.read_text().strip().splitlines()
        assert len(rows) == 1 + len(report["intervals"])


class TestHelp:
    """--help reads well for the command and both subcommands."""

    @pytest.mark.parametrize(("args", "expected"), [
        ((), "loadtest"),
        (("loadtest",), "--sessions"),
        (("target",), "--port"),
    ])
    def test_help(self, args: tuple[str, ...], expected: str) -> None:
        """Each --help exits 0 and lists its options."""
        result = supervisor(*args, "--help", timeout=30)
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout

    def test_console_script(self) -> None:
        """The installed 'supervisor' script is the same command."""
        script = Path(sys.executable).parent / "supervisor"
        if not script.exists():
            pytest.skip("the console script is not installed next to this interpreter")
        result = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                                timeout=30, check=False)
        assert result.returncode == 0
        assert result.stdout.startswith("supervisor ")


class TestBadInput:
    """Each mistake: one clear line on stderr, a non-zero exit, no traceback, no hang."""

    @pytest.mark.parametrize(("args", "status", "fragment"), [
        (("--target", "http://127.0.0.1:1"), 3, "cannot reach http://127.0.0.1:1: connection "
                                                "refused"),
        (("--target", "not-a-url"), 2, "--target must be an http, https, ws or wss URL"),
        (("--sessions", "0"), 2, "--sessions must be a whole number of 1 or more"),
        (("--sessions", "-3"), 2, "--sessions must be a whole number of 1 or more"),
        (("--duration", "0"), 2, "--duration must be a duration above 0s"),
        (("--protocol", "mqtt"), 2, "--protocol must be one of"),
        (("--no-such-option",), 2, "unrecognized arguments: --no-such-option"),
    ])
    def test_bad_input(self, args: tuple[str, ...], status: int, fragment: str) -> None:
        """The message names the problem and the fix; the exit status says which kind."""
        result = supervisor("loadtest", *args, timeout=60)
        assert result.returncode == status, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("supervisor loadtest: error: ")
        assert fragment in lines[0]
        assert "Traceback" not in result.stderr

    def test_wrong_protocol_for_the_server(self, embedded: TargetServer,
                                           tmp_path: Path) -> None:
        """websocket against a Socket.IO server stops early with a hint, exit 3, report written."""
        report_path = tmp_path / "r.json"
        result = supervisor("loadtest", "--protocol", "websocket", "--target", embedded.url,
                            "--sessions", "20", "--duration", "30", "--json", str(report_path),
                            timeout=60)
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "no session connected" in lines[0]
        assert "is --protocol websocket right for this server?" in lines[0]
        assert "Traceback" not in result.stderr
        report = read_report(report_path)
        assert report["exit"]["stopped_because"] == "no_session_connected"
        assert report["duration_s"] < 15


    def test_socketio_mode_switches_threads_server_side(self, tmp_path: Path) -> None:
        """--protocol socketio against a Chainlit-style target: each resume's connect carries
        its own thread and session id in the auth (the target's handshake log shows it)."""
        log_path = tmp_path / "handshakes.jsonl"
        with TargetServer(handshake_log=log_path) as target:
            result = supervisor("loadtest", "--protocol", "socketio",
                                "--target", f"{target.url}/ws/socket.io",
                                "--emit-event", "client_message", "--sessions", "3",
                                "--threads-per-session", "2", "--resume-every", "0.3",
                                "--duration", "3", "--json", str(tmp_path / "r.json"))
            assert result.returncode == 0, result.stderr
            records = target.handshakes()
        report = read_report(tmp_path / "r.json")
        assert report["counts"]["resumes"] > 0
        assert {r["outcome"] for r in records} == {"accepted"}  # none restored on a stale id
        threads = {r["thread_id"] for r in records}
        assert len(threads) >= 4  # 3 sessions x 2 threads, the switches reached the server
        by_session: dict[str, set[str]] = {}
        for record in records:
            by_session.setdefault(record["session_id"], set()).add(record["thread_id"])
        assert all(len(ids) == 1 for ids in by_session.values())
        assert len(records) >= 3 + report["counts"]["resumes"] // 2


class TestInterrupt:
    """Ctrl-C ends the run gracefully and still writes the report."""

    def test_sigint_stops_gracefully_and_writes_the_report(self, tmp_path: Path) -> None:
        """SIGINT after the first connect: exit 0, a report marked interrupted."""
        report_path = tmp_path / "r.json"
        lines: queue.Queue[str | None] = queue.Queue()
        with subprocess.Popen(
                [sys.executable, "-m", "supervisor", "loadtest", "--duration", "60",
                 "--sessions", "10", "--json", str(report_path)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                cwd=ROOT) as proc:

            def pump() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.put(line)
                lines.put(None)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                for _ in range(50):  # bounded: a few announcement lines come first
                    line = lines.get(timeout=RUN_TIMEOUT)
                    assert line is not None, "the run ended before any session connected"
                    if "first session connected" in line:
                        break
                proc.send_signal(signal.SIGINT)
                status = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            reader.join(timeout=10)
            stderr = proc.stderr.read() if proc.stderr else ""
        assert status == 0, stderr
        report = read_report(report_path)
        assert report["exit"]["interrupted"] is True
        assert report["exit"]["stopped_because"] == "interrupted"
        assert report["duration_s"] < 30


class TestAuthentication:
    """--login against targets that require it."""

    def test_distinct_users_per_session(self, tmp_path: Path) -> None:
        """'user{n}:user{n}' logs session n in as user n (the target's handshake log shows it)."""
        report_path, log_path = tmp_path / "r.json", tmp_path / "handshakes.jsonl"
        result = supervisor("loadtest", "--target-option", "require_login", "--target-option",
                            f"handshake_log={log_path}", "--login", "user{n}:user{n}",
                            "--sessions", "4", "--duration", "2", "--resume-every", "0.5",
                            "--json", str(report_path), "--quiet")
        report = read_report(report_path)
        assert_worked(result, report)
        users = {json.loads(line).get("user") for line in log_path.read_text().splitlines()}
        assert users == {"user1", "user2", "user3", "user4"}

    def test_wrong_password_is_a_clear_error(self) -> None:
        """A refused login stops before any session starts, with exit 2."""
        result = supervisor("loadtest", "--target-option", "require_login", "--login",
                            "alice:wrong", "--sessions", "2", "--duration", "2", timeout=60)
        assert result.returncode == 2, result.stderr
        assert "login as 'alice' refused with HTTP 401" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.chainlit
class TestRealChainlit:
    """The load test against the real Chainlit app of the interop tests."""

    def test_login_and_two_threads_per_session(self, tmp_path: Path) -> None:
        """alice's sessions chat and switch between two threads against real Chainlit."""
        if importlib.util.find_spec("chainlit") is None:
            pytest.skip("chainlit is not installed (pip install -e '.[test]')")
        from chainlit_app.harness import ChainlitApp  # noqa: PLC0415

        report_path = tmp_path / "r.json"
        with ChainlitApp() as app:
            result = supervisor("loadtest", "--target", app.url, "--login", "alice:alice-pw",
                                "--threads-per-session", "2", "--sessions", "5",
                                "--duration", "6", "--seed", "3", "--json", str(report_path),
                                "--quiet")
        report = read_report(report_path)
        assert_worked(result, report)
        assert report["target"]["embedded"] is False
        assert report["counts"]["errors"] == {}


def test_patch_gevent_patches_and_puts_the_metadata_lookup_back() -> None:
    """``_patch_gevent`` patches as ``patch_all`` does, and leaves ``importlib.metadata`` as it
    found it (its one-scan lookup lasts only while gevent patches)."""
    probe = ("from importlib import metadata; before = metadata.entry_points; "
             "from supervisor.cli import _patch_gevent; _patch_gevent(); "
             "from gevent import monkey; "
             "print(monkey.is_module_patched('socket'), monkey.is_module_patched('threading'), "
             "metadata.entry_points is before)")
    assert python_prints(probe).split() == ["True", "True", "True"]
