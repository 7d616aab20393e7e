"""The load test's verdict end to end: degraded runs fail, nothing connected is exit 3,
stages shape the load, --messages and --scenario say what sessions send, and every bad
input is one line and exit 2.

Every run is a few seconds of load against a real server on loopback, bounded by a
subprocess timeout.
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import clean_env, read_report, supervisor

from supervisor.cli import build_parser, main
from supervisor.loadtest.config import OPTIONS

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
FAULTS = ("--target-option", "drop_probability=0.05", "--target-option",
          "refuse_probability=0.02")
# 40 sessions, each resuming twice a second and chatting five times a second for 4 s:
# about 360 connects and 800 turns, so the fault dice land many times.
SHORT_LOAD = ("--sessions", "40", "--spawn-rate", "40", "--duration", "4s",
              "--resume-every", "500ms", "--think-time", "200ms", "--seed", "11", "--quiet")


def thresholds_of(report: dict[str, Any]) -> dict[str, bool]:
    return {item["expression"]: item["ok"] for item in report["thresholds"]}


class TestDegradedRuns:
    """The embedded target with faults: the verdict fails; without faults it passes."""

    def test_default_error_rate_verdict_fails_a_degraded_run(self, tmp_path: Path) -> None:
        """drop 5 %, refuse 2 %: exit 1, errors.ratio<=0.01 crossed, failures counted once."""
        path = tmp_path / "r.json"
        result = supervisor("loadtest", *SHORT_LOAD, *FAULTS, "--json", str(path))
        report = read_report(path)
        assert result.returncode == 1, result.stderr + result.stdout[-3000:]
        assert thresholds_of(report) == {"errors.ratio<=0.01": False}
        errors = report["errors"]
        assert errors["ratio"] > 0.01
        assert errors["count"] == sum(kind["count"] for kind in errors["by_kind"].values())
        # (the kinds and the counts printed: it failed once, not reproduced since)
        assert errors["by_kind"].get("connection_lost", {}).get("count", 0) > 0, \
            (errors["by_kind"], report["counts"])
        # A refused resume is a failed operation, never skipped.
        assert report["counts"]["resumes_failed"] == sum(
            kind["count"] for name, kind in errors["by_kind"].items()
            if name.startswith("resume_"))
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("supervisor loadtest: error: failed errors.ratio<=0.01 "
                                   "(measured ")
        assert "✗" in result.stdout
        assert "sample message" in result.stdout

    def test_failed_ratio_threshold_fails_a_degraded_run(self, tmp_path: Path) -> None:
        """With the error-rate limit off, sessions.failed_ratio<0.01 alone fails the run."""
        path = tmp_path / "r.json"
        result = supervisor("loadtest", *SHORT_LOAD, *FAULTS, "--fail-on-error-rate", "1",
                            "--threshold", "sessions.failed_ratio<0.01", "--json", str(path))
        report = read_report(path)
        assert result.returncode == 1, result.stderr
        assert thresholds_of(report) == {"errors.ratio<=1": True,
                                         "sessions.failed_ratio<0.01": False}
        assert report["sessions"]["failed"] >= 1
        assert report["sessions"]["failed_ratio"] == pytest.approx(
            report["sessions"]["failed"] / report["sessions"]["started"], abs=1e-6)

    def test_the_same_run_without_faults_passes(self, tmp_path: Path) -> None:
        """No faults: exit 0, no errors, every threshold of the docs' CI example holds."""
        path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
        result = supervisor("loadtest", *SHORT_LOAD, "--threshold", "sessions.failed_ratio<0.01",
                            "--threshold", "turn.p99<5s", "--threshold",
                            "sessions.connected_ratio>=0.99", "--json", str(path),
                            "--csv", str(csv_path))
        report = read_report(path)
        assert result.returncode == 0, result.stderr + result.stdout[-3000:]
        assert all(thresholds_of(report).values())
        assert len(report["thresholds"]) == 4
        assert report["errors"] == {"ratio": 0.0, "count": 0, "by_kind": {},
                                    "operations": report["errors"]["operations"]}
        assert "✓" in result.stdout


class TestNothingConnected:
    """No session ever connected: exit 3 however short the run, with a hint from evidence."""

    @pytest.fixture
    def plain_http(self) -> Iterator[str]:
        """A plain HTTP file server on loopback: not a chat server at all."""
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 http.server.SimpleHTTPRequestHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()

    def test_five_seconds_against_a_plain_http_server(self, plain_http: str,
                                                      tmp_path: Path) -> None:
        """--duration 5 --sessions 5: exit 3 and a protocol hint, not PASSED."""
        path = tmp_path / "r.json"
        result = supervisor("loadtest", "--target", plain_http, "--duration", "5",
                            "--sessions", "5", "--quiet", "--json", str(path), timeout=60)
        assert result.returncode == 3, result.stderr + result.stdout[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "no session connected" in lines[0]
        assert "protocol: the server did not answer as Socket.IO" in lines[0]
        report = read_report(path)
        assert report["exit"]["status"] == 3
        assert report["exit"]["passed"] is False
        assert report["exit"]["stopped_because"] == "no_session_connected"
        assert "PASSED" not in result.stdout

    def test_login_required_but_not_given_hints_authentication(self, tmp_path: Path) -> None:
        """A target that wants a login, and none given: the hint says authentication."""
        result = supervisor("loadtest", "--target-option", "require_login", "--duration", "3",
                            "--sessions", "3", "--quiet", timeout=60)
        assert result.returncode == 3, result.stderr
        assert "authentication: the server refused the sessions" in result.stderr

    def test_slow_handshakes_hint_a_timeout(self) -> None:
        """Handshakes slower than --connect-timeout: the hint says timeout."""
        result = supervisor("loadtest", "--target-option", "handshake_delay=3",
                            "--connect-timeout", "500ms", "--duration", "2s", "--sessions",
                            "2", "--quiet", timeout=60)
        assert result.returncode == 3, result.stderr
        assert "timeout: no handshake finished within 0.5s" in result.stderr


class TestLoadShapes:
    """--stages drives the number of active sessions."""

    def test_stages_shape_the_active_sessions(self, tmp_path: Path) -> None:
        """2s:8,2s:8,2s:0 rises to 8, holds, and falls to none (the report's intervals)."""
        path = tmp_path / "r.json"
        result = supervisor("loadtest", "--stages", "2s:8,2s:8,2s:0", "--interval", "500ms",
                            "--protocol", "websocket", "--think-time", "200ms", "--quiet",
                            "--json", str(path))
        report = read_report(path)
        assert result.returncode == 0, result.stderr + result.stdout[-3000:]
        active = [interval["active_sessions"] for interval in report["intervals"]]
        times = [interval["t"] for interval in report["intervals"]]
        rising = [a for a, t in zip(active, times, strict=True) if t <= 1.0]
        held = [a for a, t in zip(active, times, strict=True) if 2.5 <= t <= 4.0]
        falling = [a for a, t in zip(active, times, strict=True) if t >= 5.5]
        assert max(rising) <= 5, active  # about half way up at 1 s
        assert min(held) >= 7, active
        assert max(falling) <= 2, active
        assert report["sessions"]["requested"] == 8
        assert report["sessions"]["failed"] == 0  # retired sessions are not failures


class TestConversations:
    """--messages and --scenario: what the target's message log saw."""

    @staticmethod
    def sent(log: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    def test_messages_file_prompts_are_sent(self, tmp_path: Path) -> None:
        """The docs' conversations file: every prompt is sent, nothing else, turns in order."""
        conversations = [json.loads(line) for line in
                         (EXAMPLES / "conversations.jsonl").read_text().splitlines()]
        turns = [[c] if isinstance(c, str) else c for c in conversations]
        log = tmp_path / "messages.jsonl"
        result = supervisor("loadtest", "--messages", "docs/examples/conversations.jsonl",
                            "--target-option", f"message_log={log}", "--sessions", "6",
                            "--duration", "3s", "--think-time", "100ms",
                            "--threads-per-session", "1", "--quiet")
        assert result.returncode == 0, result.stderr + result.stdout[-3000:]
        records = self.sent(log)
        assert {r["text"] for r in records} == {text for turn in turns for text in turn}
        follows = {later: earlier for turn in turns
                   for earlier, later in itertools.pairwise(turn)}
        by_session: dict[str, list[str]] = {}
        for record in records:
            by_session.setdefault(record["session_id"], []).append(record["text"])
        for texts in by_session.values():
            for index, text in enumerate(texts):
                if text in follows:  # a follow-up comes right after its conversation's turn
                    assert index > 0, texts
                    assert texts[index - 1] == follows[text], texts

    def test_seed_makes_the_draws_reproducible(self, tmp_path: Path) -> None:
        """The same --seed sends the same prompts (as a multiset); another seed, others."""
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("".join(f"prompt number {n}\n" for n in range(40)))

        def run(seed: str, name: str) -> Counter[str]:
            log = tmp_path / name
            result = supervisor("loadtest", "--messages", str(prompts), "--seed", seed,
                                "--turns", "2", "--think-time", "0", "--sessions", "5",
                                "--duration", "2s", "--target-option", f"message_log={log}",
                                "--quiet")
            assert result.returncode == 0, result.stderr
            return Counter(record["text"] for record in self.sent(log))

        first, again, other = run("5", "a.jsonl"), run("5", "b.jsonl"), run("6", "c.jsonl")
        assert sum(first.values()) == 10
        assert first == again
        assert first != other

    def test_scenario_hook_plays_the_users_function(self, tmp_path: Path) -> None:
        """--scenario FILE.py:FUNCTION: the documented example's turns reach the target."""
        log = tmp_path / "messages.jsonl"
        result = supervisor("loadtest", "--scenario",
                            f"{EXAMPLES / 'loadtest_scenario.py'}:scenario", "--sessions", "3",
                            "--duration", "3s", "--turns", "2", "--target-option",
                            f"message_log={log}", "--quiet")
        assert result.returncode == 0, result.stderr + result.stdout[-3000:]
        texts = [record["text"] for record in self.sent(log)]
        assert any(text.startswith("Tell me about ") for text in texts)
        assert any(text.startswith("scenario follow-up ") for text in texts)


# --- bad input, swept over every option of both subcommands --------------------------------

LOADTEST_BAD: dict[str, tuple[str, ...]] = {
    "target": ("http://[::1", "not-a-url", "http://h:99999", "ftp://h", "http://h /x"),
    "protocol": ("mqtt",),
    "target-option": ("no_such=1", "drop_probability=2", "port=80", "=3", "token_delay=x"),
    "login": (":pw", "alice"),
    "jwt-secret": ("",),
    "connect-timeout": ("0", "-1s", "fast", "nan"),
    "confirm-resume": ("=maybe",),
    "emit-event": ("",),
    "reply-event": ("",),
    "sessions": ("0", "-3", "many", "1.5"),
    "spawn-rate": ("0", "nan", "inf", "x"),
    "duration": ("0", "2x", "-5s", "1h-2m"),
    "stages": ("30s", "x:1", "10s:0", "5s:-1"),
    "threads-per-session": ("0", "two"),
    "resume-every": ("-1", "soon"),
    "turns": ("-1", "x"),
    "think-time": ("-1", "1 s"),
    "message": ("",),
    "messages": ("/no/such/file.txt",),
    "scenario": ("nothing", "/no/file.py:f", "json:no_such_function"),
    "turn-timeout": ("0",),
    "runtime": ("fibers",),
    "seed": ("x", "1.5"),
    "processes": ("0", "-2", "two"),
    "max-handshakes-in-flight": ("0", "-1", "many"),
    "max-handshakes-per-second": ("0", "nan", "fast"),
    "interval": ("0", "-1"),
    "stop-timeout": ("0",),
    "quiet": ("=maybe",),
    "json": ("/no/such/dir/r.json", "/"),
    "csv": ("/no/such/dir/r.csv",),
    "html": ("/no/such/dir/r.html",),
    "threshold": ("turn<2s", "turn.p95<1s", "bogus.p99<1s"),
    "fail-on-error-rate": ("5", "-0.1", "x"),
    "config": ("/no/such.toml",),
}

TARGET_BAD: dict[str, tuple[str, ...]] = {
    "host": ("no such host", "300.1.1.1"),
    "port": ("-1", "99999", "x"),
    "identity-style": ("3",),
    "require-login": ("=yes",),
    "password": ("",),
    "secret": ("",),
    "foreign-thread": ("maybe",),
    "opaque-refusals": ("=yes",),
    "token-delay": ("-1", "x", "inf"),
    "reply-tokens": ("0", "x"),
    "handshake-log": ("/no/such/dir/h.jsonl",),
    "message-log": ("/no/such/dir/m.jsonl",),
    "drop-probability": ("2", "nan"),
    "drop-when": ("sometimes",),
    "refuse-probability": ("-1",),
    "handshake-delay": ("-1",),
    "seed": ("x",),
    "ping-interval": ("0", "x"),
    "ping-timeout": ("-1",),
    "log-level": ("loud",),
}


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        status = main(args)
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, capsys.readouterr().err.strip().splitlines()


def _argument(name: str, value: str) -> list[str]:
    # "=..." after a flag's name is the way to hand a flag a (bad) value.
    return [f"--{name}{value}"] if value.startswith("=") else [f"--{name}", value]


class TestBadInputSweep:
    """Each bad value of each option: exit 2, one line on stderr, no traceback."""

    def test_every_option_is_swept(self) -> None:
        """The tables cover every option of both subcommands (a new one must be added)."""
        assert set(LOADTEST_BAD) == {option.name for option in OPTIONS} | {"config"}
        parser = build_parser()
        commands = next(action for action in parser._actions
                        if isinstance(action, argparse._SubParsersAction))
        target = commands.choices["target"]
        names = {opt[2:] for action in target._actions for opt in action.option_strings
                 if opt.startswith("--") and opt != "--help"}
        assert set(TARGET_BAD) == names

    @pytest.mark.parametrize(("name", "value"), [
        (name, value) for name, values in LOADTEST_BAD.items() for value in values])
    def test_loadtest(self, name: str, value: str, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
        """supervisor loadtest --NAME BAD."""
        for key in [key for key in os.environ if key.startswith("SUPERVISOR_")]:
            monkeypatch.delenv(key)
        status, lines = _run_main(["loadtest", *_argument(name, value)], capsys)
        assert status == 2, lines
        assert len(lines) == 1, lines
        assert lines[0].startswith("supervisor loadtest: error: ")

    @pytest.mark.parametrize(("name", "value"), [
        (name, value) for name, values in TARGET_BAD.items() for value in values])
    def test_target(self, name: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
        """supervisor target --NAME BAD."""
        status, lines = _run_main(["target", *_argument(name, value)], capsys)
        assert status == 2, lines
        assert len(lines) == 1, lines
        assert lines[0].startswith("supervisor target: error: ")

    @pytest.mark.parametrize(("args", "fragment"), [
        (("loadtest", "--target", "http://[::1"), "--target is not a valid URL"),
        (("target", "--port", "-1"), "--port: must be a port number from 0 to 65535"),
        (("target", "--port", "99999"), "--port: must be a port number from 0 to 65535"),
    ])
    def test_former_tracebacks(self, args: tuple[str, ...], fragment: str) -> None:
        """The three inputs that used to end in a traceback, as a user runs them."""
        result = supervisor(*args, env=clean_env(), timeout=60)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert fragment in lines[0]
        assert "Traceback" not in result.stderr


ROOT = Path(__file__).resolve().parent.parent


class TestDocs:
    """The README's commands, .ci/run and the load-testing guide's commands stay true."""

    def test_readme_commands_and_ci_are_in_step(self) -> None:
        """Line 1: the light install and the load test; line 2: test tools and pytest."""
        readme = (ROOT / "README.md").read_text()
        block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
        assert block[0].endswith("pip install -e . && supervisor loadtest")
        assert block[1] == "pip install -e '.[test]' && python -m pytest"
        ci = (ROOT / ".ci" / "run").read_text()
        assert "python -m pip install --quiet -e .\n" in ci
        assert "python -m pip install --quiet -e '.[test]'\n" in ci
        assert ci.rstrip().endswith("python -m pytest")
        for text in (readme, (ROOT / "docs" / "load-testing.md").read_text()):
            assert "pip install session-supervisor" not in text  # not on PyPI

    def test_guide_commands_parse(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every 'supervisor loadtest' command in the guide is valid input (from the root)."""
        import shlex  # noqa: PLC0415

        from supervisor.loadtest.config import resolve  # noqa: PLC0415

        monkeypatch.chdir(ROOT)
        guide = (ROOT / "docs" / "load-testing.md").read_text().replace("\\\n", " ")
        commands = [line.strip() for line in guide.splitlines()
                    if line.strip().startswith("supervisor loadtest ")]
        assert len(commands) >= 8
        environ = {"APP_URL": "http://127.0.0.1:8000", "CI_PASSWORD": "pw"}
        for command in commands:
            words = shlex.split(command.split("#")[0].replace("$APP_URL", environ["APP_URL"])
                                .replace("$CI_PASSWORD", environ["CI_PASSWORD"]))
            args = build_parser().parse_args(words[1:])
            if args.config:  # the guide's config file is an example, not a file here
                args.config = None
            resolve(args, {})
