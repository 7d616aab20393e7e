"""The load test's verdict in pure code: durations, thresholds, shapes, conversations, hints."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, ClassVar

import pytest

from supervisor.cli import build_parser
from supervisor.loadtest.config import LoadTestConfig, resolve
from supervisor.loadtest.conversations import load_conversations, load_scenario
from supervisor.loadtest.shape import Shape, Stage, next_resume, parse_stages
from supervisor.loadtest.thresholds import judge, parse_threshold
from supervisor.loadtest.values import ConfigError, parse_duration
from supervisor.loadtest.verdict import classify, likely_cause, no_connect_hint

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def config_of(*args: str, environ: dict[str, str] | None = None) -> LoadTestConfig:
    """Resolve ``supervisor loadtest ARGS`` with only the given environment."""
    return resolve(build_parser().parse_args(["loadtest", *args]), environ or {})


class TestDurations:
    """Durations with units, everywhere a load-test option takes time."""

    @pytest.mark.parametrize(("text", "seconds"), [
        ("30", 30.0), ("2.5", 2.5), ("500ms", 0.5), ("30s", 30.0), ("2m", 120.0),
        ("1h30m", 5400.0), ("1m30.5s", 90.5), ("1h", 3600.0), (" 2M ", 120.0), (7, 7.0)])
    def test_forms(self, text: Any, seconds: float) -> None:
        """Plain seconds, and ms/s/m/h parts in any combination."""
        assert parse_duration(text, "--duration") == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["", "2x", "m", "1h-30m", "30 s", "nan", "inf", "1e400"])
    def test_bad_forms(self, text: str) -> None:
        """Anything else names the option and shows valid forms."""
        with pytest.raises(ConfigError, match=r"--duration .*e\.g\. 30, 30s, 500ms, 2m"):
            parse_duration(text, "--duration")

    def test_every_time_option_takes_units(self) -> None:
        """--duration, --think-time, --resume-every, --connect-timeout and others take units."""
        config = config_of("--duration", "2m", "--think-time", "500ms", "--resume-every", "1m",
                           "--connect-timeout", "15s", "--turn-timeout", "1m30s",
                           "--interval", "2s", "--stop-timeout", "5s")
        assert (config.duration, config.think_time, config.resume_every) == (120.0, 0.5, 60.0)
        assert (config.connect_timeout, config.turn_timeout) == (15.0, 90.0)
        assert (config.interval, config.stop_timeout) == (2.0, 5.0)


class TestThresholds:
    """``METRIC.STAT OP VALUE``: parsed, judged on the report, reported."""

    REPORT: ClassVar[dict[str, Any]] = {
        "latency_ms": {"turn": {"count": 10, "p50": 120.0, "p90": 400.0, "p99": 1500.0,
                                "p99.9": 2100.0, "max": 2500.0, "mean": 300.0},
                       "first_token": {"count": 0, "p50": None, "p90": None, "p99": None,
                                       "p99.9": None, "max": None, "mean": None}},
        "sessions": {"failed_ratio": 0.12, "connected_ratio": 0.83, "peak_ratio": 0.98},
        "errors": {"ratio": 0.0532}}

    @pytest.mark.parametrize(("expression", "value", "ok"), [
        ("turn.p50<2s", 120.0, True),
        ("turn.p90<=400ms", 400.0, True),
        ("turn.p99<1s", 1500.0, False),
        ("turn.p99.9<3000", 2100.0, True),
        ("turn.max<2.5s", 2500.0, False),
        ("turn.mean>=0.005m", 300.0, True),
        ("turn.p99 > 1s", 1500.0, True),
        ("sessions.failed_ratio<0.01", 0.12, False),
        ("sessions.connected_ratio>=0.8", 0.83, True),
        ("sessions.peak_ratio>=99%", 0.98, False),
        ("errors.ratio<0.001", 0.0532, False),
        ("errors.ratio<10%", 0.0532, True),
        ("first_token.p99<500ms", None, False),  # no samples: never passes
    ])
    def test_forms_parse_and_judge(self, expression: str, value: float | None,
                                   ok: bool) -> None:
        """Each form: the figure it reads from the report, and whether it holds."""
        threshold = parse_threshold(expression)
        [result] = judge((threshold,), self.REPORT)
        assert result["expression"] == expression
        assert result["value"] == value
        assert result["ok"] is ok

    def test_units_scale_the_limit(self) -> None:
        """Latency limits are kept in ms; percentages become fractions."""
        assert parse_threshold("turn.p99<2s").limit == 2000.0
        assert parse_threshold("turn.p99<1.5m").limit == 90_000.0
        assert parse_threshold("errors.ratio<1%").limit == pytest.approx(0.01)

    @pytest.mark.parametrize(("expression", "why"), [
        ("turn<2s", "not a threshold"),
        ("turn.p95<2s", "turn has no statistic 'p95'"),
        ("bogus.p99<2s", "unknown metric bogus.p99"),
        ("turn.p99<2%", "a latency takes ms, s or m"),
        ("errors.ratio<2s", "a ratio takes a fraction"),
        ("turn.p99 = 2s", "not a threshold"),
        ("turn.p99<", "not a threshold"),
    ])
    def test_bad_expressions_show_a_valid_one(self, expression: str, why: str) -> None:
        """A bad expression says why and shows valid ones."""
        with pytest.raises(ConfigError) as caught:
            config_of("--threshold", expression)
        message = str(caught.value)
        assert why in message
        assert "METRIC.STAT OP VALUE, e.g. turn.p99<2s" in message

    def test_every_layer_gives_thresholds(self, tmp_path: Path) -> None:
        """Flags (repeatable), the config file (a list) and the environment (;-separated)."""
        assert [t.expression for t in config_of("--threshold", "turn.p99<2s", "--threshold",
                                                "errors.ratio<0.001").threshold] == [
            "turn.p99<2s", "errors.ratio<0.001"]
        path = tmp_path / "load.toml"
        path.write_text('[loadtest]\nthreshold = ["connect.p99<=3s", "sessions.failed_ratio'
                        '<0.01"]\n')
        from_file = config_of("--config", str(path))
        assert [t.expression for t in from_file.threshold] == ["connect.p99<=3s",
                                                                "sessions.failed_ratio<0.01"]
        from_env = config_of(environ={"SUPERVISOR_THRESHOLD": "turn.p50<2s; first_token.p99<500ms"})
        assert [t.expression for t in from_env.threshold] == ["turn.p50<2s",
                                                               "first_token.p99<500ms"]

    def test_fail_on_error_rate_is_the_first_threshold(self) -> None:
        """--fail-on-error-rate X is errors.ratio<=X (default 0.01), judged with the rest."""
        assert [t.expression for t in config_of().thresholds] == ["errors.ratio<=0.01"]
        config = config_of("--fail-on-error-rate", "0.05", "--threshold", "turn.p99<2s")
        assert [t.expression for t in config.thresholds] == ["errors.ratio<=0.05", "turn.p99<2s"]
        assert config.settings()["threshold"] == ["turn.p99<2s"]


class TestShapes:
    """Stages, the plain ramp, and the resume grid."""

    def test_stages_parse(self) -> None:
        """DURATION:SESSIONS items with units; the run's peak and duration follow."""
        stages = parse_stages("30s:100,2m:100,30s:0", "--stages")
        assert stages == (Stage(30.0, 100), Stage(120.0, 100), Stage(30.0, 0))
        config = config_of("--stages", "30s:100,2m:100,30s:0")
        assert (config.sessions, config.duration) == (100, 180.0)
        assert config.settings()["stages"] == "30s:100,120s:100,30s:0"

    @pytest.mark.parametrize("text", ["", "30s", "30s:x", "0s:10", "10s:-1", "10s:0", "x:10"])
    def test_bad_stages(self, text: str) -> None:
        """Each mistake names the stage and shows a valid --stages."""
        with pytest.raises(ConfigError, match="--stages 30s:100,2m:100,30s:0"):
            config_of("--stages", text)

    def test_stages_move_linearly(self) -> None:
        """Ramp up, hold, ramp down: the wanted sessions at each moment."""
        shape = Shape(parse_stages("10s:100,10s:100,10s:0", "--stages"))
        assert [shape.wanted_at(t) for t in (0, 2.5, 5, 10, 15, 20, 25, 29.9, 30, 40)] == [
            0, 25, 50, 100, 100, 100, 50, 1, 0, 0]

    def test_plain_ramp(self) -> None:
        """Without stages: one at once, then --spawn-rate a second up to --sessions."""
        shape = config_of("--sessions", "10", "--spawn-rate", "4", "--duration", "5").shape
        assert [shape.wanted_at(t) for t in (0, 0.24, 0.25, 1.0, 2.0, 4.9)] == [
            1, 1, 2, 5, 9, 10]

    def test_resumes_are_spread_evenly(self) -> None:
        """100 sessions' resumes fill each 5 s period evenly: 10 in every half second."""
        every = 5.0
        times = [next_resume(n, every, 0.0) for n in range(1, 101)]
        assert all(0 <= t < every for t in times)
        buckets = [sum(1 for t in times if k * 0.5 <= t < (k + 1) * 0.5) for k in range(10)]
        assert all(8 <= count <= 12 for count in buckets), buckets
        # A fixed grid: the next one is a period later, whenever the last one ended.
        assert next_resume(7, every, times[6] + 0.3) == pytest.approx(times[6] + every)


class TestConversations:
    """--messages files: text or JSON lines, drawn reproducibly per session."""

    def test_text_one_prompt_a_line(self, tmp_path: Path) -> None:
        """Blank lines are skipped; each line is a one-turn conversation."""
        path = tmp_path / "prompts.txt"
        path.write_text("What is 2+2?\n\n  Name a colour. \n")
        assert load_conversations(str(path)).items == (("What is 2+2?",), ("Name a colour.",))

    def test_json_lines_with_multi_turn_conversations(self, tmp_path: Path) -> None:
        """A string is one turn; a list of strings is a conversation, in order."""
        path = tmp_path / "chats.jsonl"
        path.write_text(json.dumps("hello") + "\n" + json.dumps(["hi", "and then?"]) + "\n")
        assert load_conversations(str(path)).items == (("hello",), ("hi", "and then?"))

    @pytest.mark.parametrize(("name", "content", "why"), [
        ("c.jsonl", "{not json\n", "line 1 is not JSON"),
        ("c.jsonl", '"ok"\n[1, 2]\n', "line 2 must be a non-empty string or a list"),
        ("c.jsonl", "[]\n", "line 1 must be"),
        ("c.txt", "\n\n", "has no prompts"),
    ])
    def test_bad_files(self, tmp_path: Path, name: str, content: str, why: str) -> None:
        """The file and line of the first problem, and the formats."""
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ConfigError, match=why):
            config_of("--messages", str(path))

    def test_missing_file(self) -> None:
        """A path that does not exist fails before the run starts."""
        with pytest.raises(ConfigError, match="--messages: cannot read /no/such/file"):
            config_of("--messages", "/no/such/file")

    def test_draws_are_reproducible_per_seed(self, tmp_path: Path) -> None:
        """The same seed draws the same conversations; another seed, others."""
        path = tmp_path / "prompts.txt"
        path.write_text("".join(f"prompt {n}\n" for n in range(50)))
        conversations = load_conversations(str(path))

        def draws(seed: int) -> list[tuple[str, ...]]:
            rng = random.Random(seed)
            return [conversations.draw(rng) for _ in range(20)]

        assert draws(1) == draws(1)
        assert draws(1) != draws(2)

    def test_scenario_hook_loads(self) -> None:
        """FILE.py:FUNCTION loads the documented example; bad specs are clear errors."""
        scenario = load_scenario(f"{EXAMPLES / 'loadtest_scenario.py'}:scenario")
        assert callable(scenario)
        for spec, why in (("nothing", "is not MODULE:FUNCTION"),
                          ("/no/file.py:f", "no file /no/file.py"),
                          ("json:no_such_function", "has no function 'no_such_function'"),
                          ("no_such_module_xyz:f", "importing no_such_module_xyz failed")):
            with pytest.raises(ConfigError, match=why):
                load_scenario(spec)


class TestNoConnectHint:
    """When nothing connected, the hint names the likely cause from the evidence."""

    @pytest.mark.parametrize(("evidence", "cause"), [
        ("HandshakeRefused: handshake refused with HTTP 401", "authentication"),
        ("HandshakeRefused: handshake refused with HTTP 403", "authentication"),
        ("ProtocolRefused: authentication failed", "authentication"),
        ("ProtocolRefused: Connection refused by server", "authentication"),
        ("HandshakeError: handshake timed out after 10s", "timeout"),
        ("WebSocketTimeoutException: timed out", "timeout"),
        ("HandshakeRefused: handshake refused with HTTP 404", "protocol"),
        ("HandshakeError: not an Engine.IO open packet", "protocol"),
        ("ConnectionRefusedError: [Errno 111] Connection refused", "unreachable"),
    ])
    def test_classify(self, evidence: str, cause: str) -> None:
        """Each kind of failure points to one cause."""
        assert classify(evidence) == cause

    def test_the_most_frequent_cause_wins(self) -> None:
        """Votes are weighted by how often each failure was seen."""
        evidence = {"HandshakeError: handshake timed out": 2,
                    "HandshakeRefused: handshake refused with HTTP 403": 5}
        assert likely_cause(evidence) == "authentication"
        assert likely_cause({}) is None

    def test_hints_name_the_cause(self) -> None:
        """Authentication, timeout and protocol hints say what to check."""
        auth = no_connect_hint({"ProtocolRefused: authentication failed": 3}, "chainlit", 10)
        assert auth.startswith("authentication:")
        assert "--login" in auth
        slow = no_connect_hint({"HandshakeError: timed out": 3}, "chainlit", 10)
        assert slow.startswith("timeout: no handshake finished within 10s")
        wrong = no_connect_hint({"HandshakeRefused: handshake refused with HTTP 404": 3},
                                "chainlit", 10)
        assert wrong.startswith("protocol:")
        assert "is --protocol chainlit right for this server?" in wrong
        # 403 on a WebSocket upgrade: a refusal, or a path the server does not route.
        either = no_connect_hint({"HandshakeRefused: handshake refused with HTTP 403": 3},
                                 "websocket", 10)
        assert either.startswith("authentication or protocol:")
        assert "is --protocol websocket right for this server?" in either
