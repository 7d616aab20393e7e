"""Load-test settings: one table of options, four layers, validated once.

Precedence, lowest first: built-in defaults < config file (``--config PATH``,
TOML, table ``[loadtest]``, keys spelled as the long options with dashes or
underscores) < environment variables ``SUPERVISOR_<OPTION>`` < command-line flags.
Every layer goes through the same converters, so an error names where the bad
value came from and says how to fix it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from supervisor.loadtest.conversations import Conversations, load_conversations, load_scenario
from supervisor.loadtest.shape import Shape, Stage, parse_stages, stages_text
from supervisor.loadtest.thresholds import Threshold, error_rate_threshold, parse_threshold
from supervisor.loadtest.values import (
    ConfigError,
    Login,
    at_least,
    check_target_url,
    choice,
    duration,
    fraction,
    integer,
    parse_bool,
    parse_login,
    report_path,
    text,
)

ENV_PREFIX = "SUPERVISOR_"
PROTOCOLS = ("chainlit", "socketio", "websocket")
RUNTIMES = ("threads", "gevent")
INSTALL_HINT = "pip install -e '.[{extra}]'"
"""How a user adds an extra: the package is installed from a checkout, not PyPI."""

MIN_HANDSHAKE_RATE = 500.0
"""The least admission rate a load test derives from its shape (``RestartPolicy``'s own)."""

Converter = Callable[[Any, str], Any]


@dataclass(frozen=True, slots=True)
class Option:
    """One load-test option, the same in every layer."""

    name: str
    """The long option without dashes, e.g. ``spawn-rate``."""
    default: Any
    convert: Converter
    help: str
    metavar: str | None = None
    group: str = "load"
    flag: bool = False
    """A boolean: ``--name`` / ``--no-name`` on the command line."""
    repeat: bool = False
    """May be given several times (a list)."""

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def _target(value: Any, source: str) -> str | None:
    return None if value is None else check_target_url(text(value, source), source)


def _optional_text(value: Any, source: str) -> str | None:
    return None if value is None else text(value, source)


def _optional_int(value: Any, source: str) -> int | None:
    return None if value is None else integer(value, source)


_count = at_least(1, integer=True)
_rate = at_least(0.0, strict=True)


def _optional_count(value: Any, source: str) -> int | None:
    return None if value is None else _count(value, source)


def _optional_rate(value: Any, source: str) -> float | None:
    return None if value is None else _rate(value, source)


def _thresholds(value: Any, source: str) -> tuple[Threshold, ...]:
    # From the environment several come separated by semicolons (commas may not
    # separate them: a threshold never holds one, but a list reads better so).
    items = value if isinstance(value, list | tuple) else str(value).split(";")
    return tuple(parse_threshold(str(item), source) for item in items if str(item).strip())


def _optional_stages(value: Any, source: str) -> tuple[Stage, ...] | None:
    return None if value is None else parse_stages(value, source)


def _optional_conversations(value: Any, source: str) -> Conversations | None:
    return None if value is None else load_conversations(text(value, source), source)


@dataclass(frozen=True, slots=True)
class Scenario:
    """``--scenario``: the spec as given, and the function it names."""

    spec: str
    function: Callable[[Any], None]

    def __str__(self) -> str:
        return self.spec


def _optional_scenario(value: Any, source: str) -> Scenario | None:
    if value is None:
        return None
    spec = text(value, source)
    return Scenario(spec, load_scenario(spec, source))


def _optional_login(value: Any, source: str) -> Login | None:
    return None if value is None else parse_login(text(value, source), source)


def _optional_path(value: Any, source: str) -> str | None:
    return None if value is None else report_path(text(value, source), source)


def _target_options(value: Any, source: str) -> tuple[str, ...]:
    items: list[str] = []
    raw = value.items() if isinstance(value, Mapping) else None
    if raw is not None:  # a TOML table: {token_delay = 0.01}
        return tuple(f"{key}={item}" for key, item in raw)
    for item in value if isinstance(value, list | tuple) else [value]:
        # From the environment several come comma-separated.
        items.extend(part.strip() for part in str(item).split(",") if part.strip())
    for item in items:
        if not item.split("=", 1)[0].strip():
            raise ConfigError(f"{source}: {item!r} names no option",
                              "use NAME or NAME=VALUE, e.g. --target-option token_delay=0.01")
    return tuple(items)


def _processes(value: Any, source: str) -> int:
    # locust concern (issue 10): -1 is one worker process per core
    count = integer(value, source)
    if count == 0 or count < -1:
        raise ConfigError(f"{source} must be 1 or more, or -1 (one per core)",
                          "e.g. --processes 4")
    return count


OPTIONS: tuple[Option, ...] = (
    # --- target
    Option("target", None, _target, "server to load: http(s)://HOST:PORT for chainlit and "
           "socketio, ws(s)://HOST:PORT/PATH for websocket (default: start the embedded "
           "target on a free loopback port)", "URL", "target"),
    Option("protocol", "chainlit", choice(PROTOCOLS), "wire protocol: chainlit, socketio or "
           "websocket (default: %(default)s)", "NAME", "target"),
    Option("target-option", (), _target_options, "embedded target only: one of its options "
           "(see 'supervisor target --help'), e.g. token_delay=0.01 or require_login; "
           "repeatable", "NAME[=VALUE]", "target", repeat=True),
    Option("login", None, _optional_login, "log each session in with POST /login; {n} "
           "becomes the session's number (1..N) for distinct users, e.g. 'user{n}:pw{n}'",
           "USER:PASSWORD", "target"),
    Option("jwt-secret", None, _optional_text, "mint each session's access token with the "
           "app's CHAINLIT_AUTH_SECRET instead of logging in (user: the USER of --login, "
           "else loadtest-{n}); needs PyJWT", "SECRET", "target"),
    Option("connect-timeout", 30.0, duration(strict=True), "how long a handshake may take; "
           "a saturated server takes seconds over each (default: %(default)ss)", "DURATION",
           "target"),
    Option("confirm-resume", True, parse_bool, "chainlit: a resume waits for resume_thread / "
           "resume_thread_error; turn off for apps without @cl.on_chat_resume (default: on)",
           group="target", flag=True),
    Option("emit-event", None, _optional_text, "socketio: the event each turn emits with "
           "--message; 'client_message' sends a Chainlit message (default: message; "
           "client_message against the embedded target)", "NAME", "target"),
    Option("reply-event", None, _optional_text, "socketio: the inbound event that ends a turn "
           "(default: any event; task_end after client_message)", "NAME", "target"),
    # --- load shape
    Option("sessions", 100, at_least(1, integer=True), "sessions to run (default: %(default)s)",
           "N"),
    Option("spawn-rate", 20.0, at_least(0.0, strict=True), "sessions started per second "
           "(default: %(default)s)", "R"),
    Option("duration", 20.0, duration(strict=True), "how long the test runs, from the "
           "first session started: seconds or units, e.g. 90, 2m, 1h30m (default: "
           "%(default)ss)", "DURATION"),
    Option("stages", None, _optional_stages, "a load shape instead of --sessions, "
           "--spawn-rate and --duration: DURATION:SESSIONS stages, each moving the number of "
           "sessions linearly to its target, e.g. 30s:100,2m:100,30s:0", "STAGES"),
    Option("threads-per-session", 2, at_least(1, integer=True), "threads each session cycles "
           "through with Resume (default: %(default)s)", "K"),
    Option("resume-every", 5.0, duration(), "time between a session's resumes, spread evenly "
           "over the sessions; 0: never (default: %(default)ss)", "DURATION"),
    Option("turns", 0, at_least(0, integer=True), "chat turns per session; 0: as many as fit in "
           "the duration (default: %(default)s)", "N"),
    Option("think-time", 1.0, duration(), "pause between a session's turns "
           "(default: %(default)ss)", "DURATION"),
    Option("message", "hello", text, "text of each chat message (default: %(default)s)",
           "TEXT"),
    Option("messages", None, _optional_conversations, "prompts to send instead of --message: "
           "text, one prompt a line, or JSON lines (.jsonl), a string or a list of strings "
           "(a multi-turn conversation) a line; each session draws its own (see --seed)",
           "FILE"),
    Option("scenario", None, _optional_scenario, "your own turn: a Python function given the "
           "session, called whenever a turn is due, e.g. my_load.py:scenario or "
           "package.module:scenario", "MODULE:FUNCTION"),
    Option("turn-timeout", 30.0, duration(strict=True), "how long a turn may take before it "
           "counts as an error (default: %(default)ss)", "DURATION"),
    # --- run
    Option("runtime", "threads", choice(RUNTIMES), "threads, or gevent for many sessions "
           "(default: %(default)s)", "NAME", "run"),
    Option("seed", None, _optional_int, "seed for thread ids, jitter and the embedded "
           "target's fault dice, for reproducible runs", "INT", "run"),
    Option("interval", 1.0, duration(strict=True), "length of each interval of the "
           "over-time series (default: %(default)ss)", "DURATION", "run"),
    Option("stop-timeout", 10.0, duration(strict=True), "time allowed for closing "
           "the sessions at the end (default: %(default)ss)", "DURATION", "run"),
    Option("quiet", False, parse_bool, "no live progress", group="run", flag=True),
    Option("max-handshakes-in-flight", None, _optional_count, "admission control: "
           "handshakes in flight at once; the rest queue, and time queued never counts "
           "against --connect-timeout (default: the load shape's sessions, so none queues)",
           "N", "run"),
    Option("max-handshakes-per-second", None, _optional_rate, "admission control: "
           "handshakes started per second at most (default: twice what the load shape "
           f"starts, first connects and thread switches, at least {MIN_HANDSHAKE_RATE:g})",
           "R", "run"),
    Option("processes", 1, _processes, "processes that run the sessions: N Locust workers "
           "under one master on this machine, -1 one per core; above 1 needs the [locust] "
           "extra (default: %(default)s)", "N", "run"),
    # --- reports
    Option("json", None, _optional_path, "write the JSON report here", "PATH", "report"),
    Option("csv", None, _optional_path, "write one CSV row per interval here", "PATH", "report"),
    Option("html", None, _optional_path, "write a self-contained HTML report here", "PATH",
           "report"),
    Option("threshold", (), _thresholds, "exit 1 unless METRIC.STAT OP VALUE holds, e.g. "
           "turn.p99<2s, first_token.p50<=500ms, sessions.failed_ratio<0.01, "
           "sessions.connected_ratio>=0.99, errors.ratio<0.001; latencies take p50, p90, "
           "p99, p99.9, max or mean; repeatable", "EXPR", "report", repeat=True),
    Option("fail-on-error-rate", 0.01, fraction, "exit 1 when the error rate (failed "
           "operations over attempted ones, see the docs) is above this fraction; the "
           "threshold errors.ratio<=X; 1 turns it off (default: %(default)s)", "X", "report"),
)

BY_DEST = {option.dest: option for option in OPTIONS}

GROUPS = {"target": "target and authentication", "load": "load shape",
          "run": "running", "report": "reports and exit status"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option to ``parser``; values stay raw strings (None: not given)."""
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="TOML file with a [loadtest] table of these options "
                             f"(also {ENV_PREFIX}CONFIG)")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for option in OPTIONS:
        group = groups[option.group]
        shown = (f"{option.default:g}" if isinstance(option.default, float)
                 else str(option.default))
        help_text = option.help.replace("%(default)s", shown)
        flags = f"--{option.name}"
        if option.flag:
            group.add_argument(flags, dest=option.dest, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        elif option.repeat:
            group.add_argument(flags, dest=option.dest, default=None, action="append",
                               metavar=option.metavar, help=help_text)
        else:
            group.add_argument(flags, dest=option.dest, default=None, metavar=option.metavar,
                               help=help_text)


@dataclass(frozen=True, slots=True)
class LoadTestConfig:
    """Every load-test setting, validated. Field names are the options' ``dest`` names."""

    target: str | None
    protocol: str
    target_option: tuple[str, ...]
    login: Login | None
    jwt_secret: str | None
    connect_timeout: float
    confirm_resume: bool
    emit_event: str | None
    reply_event: str | None
    sessions: int
    spawn_rate: float
    duration: float
    stages: tuple[Stage, ...] | None
    threads_per_session: int
    resume_every: float
    turns: int
    think_time: float
    message: str
    messages: Conversations | None
    scenario: Scenario | None
    turn_timeout: float
    runtime: str
    seed: int | None
    interval: float
    stop_timeout: float
    quiet: bool
    json: str | None
    csv: str | None
    html: str | None
    threshold: tuple[Threshold, ...]
    fail_on_error_rate: float
    config: str | None = None
    processes: int = 1
    """locust concern (issue 10): worker processes; 1 runs in this process."""
    max_handshakes_in_flight: int | None = None
    """Admission control: handshakes in flight at once; None: from the shape (see
    :attr:`admission_limits`)."""
    max_handshakes_per_second: float | None = None
    """Admission control: handshakes started per second at most; None: from the shape."""

    @property
    def embedded(self) -> bool:
        """True when the load test starts its own target."""
        return self.target is None

    @property
    def shape(self) -> Shape:
        """Sessions wanted over time: ``--stages``, else the ramp at ``--spawn-rate``."""
        if self.stages is not None:
            return Shape(self.stages)
        return Shape.ramp(self.sessions, self.spawn_rate, self.duration)

    @property
    def admission_limits(self) -> tuple[int, float]:
        """Handshakes in flight at once and started per second: the options, else the shape's.

        A load test offers the load its shape asks for, as the users it stands for
        would: by default admission holds no handshake back. A session has at most
        one in flight, so as many as the shape's sessions; and twice the handshakes a
        second the shape starts (first connects at its steepest rise, plus every
        session's thread switches), at least ``MIN_HANDSHAKE_RATE``, so that only a
        reconnect storm is paced. A server that cannot keep up then shows as its own
        handshake latency, each handshake with ``--connect-timeout`` at the server;
        the options, set lower, spare a server and queue the rest.
        """
        shape = self.shape
        in_flight = self.max_handshakes_in_flight or shape.peak
        if self.max_handshakes_per_second is not None:
            return in_flight, self.max_handshakes_per_second
        switching = self.threads_per_session > 1 and self.resume_every > 0
        switches = shape.peak / self.resume_every if switching else 0.0
        return in_flight, max(MIN_HANDSHAKE_RATE, 2 * (shape.peak_start_rate + switches))

    @property
    def thresholds(self) -> tuple[Threshold, ...]:
        """Every threshold judged: ``--fail-on-error-rate`` first, then each ``--threshold``."""
        return (error_rate_threshold(self.fail_on_error_rate), *self.threshold)

    def settings(self) -> dict[str, Any]:
        """Every option as the report records it (secrets redacted)."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "login" and value is not None:
                value = value.redacted()
            elif item.name == "jwt_secret" and value is not None:
                value = "[redacted]"
            elif item.name == "stages" and value is not None:
                value = stages_text(value)
            elif item.name == "threshold":
                value = [threshold.expression for threshold in value]
            elif item.name == "messages" and value is not None:
                value = value.source
            elif item.name == "scenario" and value is not None:
                value = value.spec
            elif isinstance(value, tuple):
                value = list(value)
            out[item.name] = value
        return out


def _read_file(path: str) -> dict[str, Any]:
    """The ``[loadtest]`` table of a TOML file, keys normalized to ``dest`` names."""
    try:
        with Path(path).open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror or exc}",
                          "check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}",
                          "fix the file's syntax") from exc
    table = document.get("loadtest")
    if not isinstance(table, dict):
        raise ConfigError(f"--config: {path} has no [loadtest] table",
                          "put the options under a [loadtest] header")
    values: dict[str, Any] = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        if dest not in BY_DEST:
            raise ConfigError(f"--config: unknown option {key!r} in [loadtest] of {path}",
                              "see 'supervisor loadtest --help' for the names")
        values[dest] = value
    return values


def _source(option: Option, layer: str, path: str | None) -> str:
    return {"cli": f"--{option.name}", "env": option.env,
            "file": f"{option.name} in {path}"}.get(layer, f"--{option.name}")


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> LoadTestConfig:
    """Merge defaults, config file, environment and flags; validate; raise ConfigError."""
    env = os.environ if environ is None else environ
    config_path = args.config or env.get(f"{ENV_PREFIX}CONFIG") or None
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_path:
        layers.append(("file", _read_file(config_path)))
    layers.append(("env", {option.dest: env[option.env] for option in OPTIONS
                           if env.get(option.env, "").strip()}))
    layers.append(("cli", {option.dest: getattr(args, option.dest) for option in OPTIONS
                           if getattr(args, option.dest, None) is not None}))
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value, source = option.default, f"--{option.name} default"
        for layer, given in layers:
            if option.dest in given:
                value, source = given[option.dest], _source(option, layer, config_path)
        values[option.dest] = option.convert(value, source)
    return _cross_check(LoadTestConfig(config=config_path, **values))


def _cross_check(config: LoadTestConfig) -> LoadTestConfig:
    """Checks that involve more than one option, and defaults that depend on others."""
    if config.protocol == "socketio":
        # The embedded target speaks Chainlit's events; a generic server, its own.
        emit = config.emit_event or ("client_message" if config.embedded else "message")
        reply = config.reply_event or ("task_end" if emit == "client_message" else None)
        config = dataclasses.replace(config, emit_event=emit, reply_event=reply)
    if config.stages is not None:
        # The stages decide how many sessions run and for how long.
        config = dataclasses.replace(config, sessions=config.shape.peak,
                                     duration=config.shape.duration)
    if config.target_option and not config.embedded:
        raise ConfigError("--target-option applies only to the embedded target",
                          "drop --target to use the embedded target, or configure your server")
    if config.jwt_secret is not None and importlib.util.find_spec("jwt") is None:
        raise ConfigError("--jwt-secret needs PyJWT",
                          f"from your checkout: {INSTALL_HINT.format(extra='jwt')}")
    if config.login is not None and config.login.password is None and config.jwt_secret is None:
        raise ConfigError(f"--login {config.login.user!r} has no password",
                          "give USER:PASSWORD, or --jwt-secret to mint tokens instead")
    if config.html is not None and importlib.util.find_spec("supervisor.loadtest.html") is None:
        raise ConfigError("--html: this installation has no HTML report module",
                          "use --json or --csv, or reinstall from your checkout: pip install -e .")
    if config.runtime == "gevent" and importlib.util.find_spec("gevent") is None:
        raise ConfigError("--runtime gevent needs gevent",
                          f"from your checkout: {INSTALL_HINT.format(extra='gevent')}")
    return config


def parse(argv: Sequence[str], parser: argparse.ArgumentParser,
          environ: Mapping[str, str] | None = None) -> LoadTestConfig:
    """Parse ``argv`` with ``parser`` (built with :func:`add_arguments`) and resolve it."""
    return resolve(parser.parse_args(list(argv)), environ)
