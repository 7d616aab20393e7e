"""Locust command-line options for chat sessions, named as ``supervisor loadtest`` names them.

One list of options exists, ``supervisor.loadtest.config.OPTIONS``; Locust gets
the subset that means the same under Locust (:data:`SHARED`), with the same
names, help and validation. Locust's own options cover the rest: ``--users``
(sessions), ``--spawn-rate``, ``--run-time`` (duration), ``--host`` (target),
``--stop-timeout``. Our report files are ``--chat-json``, ``--chat-csv`` and
``--chat-html``, because Locust's ``--json``, ``--csv`` and ``--html`` already
write Locust's own statistics.

A user class's settings come from, lowest first: the option's default, a
config file and ``SUPERVISOR_<OPTION>`` variables (as for ``supervisor
loadtest``), the class's ``options`` mapping, then the command line.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.loadtest.config import BY_DEST, LoadTestConfig, resolve
from supervisor.loadtest.values import ConfigError, Login

SHARED = ("login", "jwt-secret", "connect-timeout", "confirm-resume", "emit-event",
          "reply-event", "threads-per-session", "resume-every", "turns", "think-time",
          "message", "turn-timeout", "seed", "interval", "fail-on-error-rate")
"""``supervisor loadtest`` options that Locust runs take under the same name."""

REPORTS = {"chat-json": "json", "chat-csv": "csv", "chat-html": "html"}
"""Our report files under Locust: option name -> ``supervisor loadtest`` option."""

RUN_FILE_ENV = "SUPERVISOR_LOCUST_RUN"
"""Set by ``supervisor loadtest --processes``: a JSON file with the run's whole config."""

LOCUST_DEFAULT_DURATION = 3600.0
"""The duration a report records when Locust runs without ``--run-time``."""


def add_options(parser: Any) -> None:
    """Add our options to Locust's parser (an ``init_command_line_parser`` listener).

    Added to the parser itself, not a group: only Locust's own ``add_argument``
    knows ``is_secret`` (the web UI hides such a value).
    """
    for name in SHARED:
        option = BY_DEST[name.replace("-", "_")]
        shown = (f"{option.default:g}" if isinstance(option.default, float)
                 else str(option.default))
        extra: dict[str, Any] = {"is_secret": True} if name == "jwt-secret" else {}
        if option.flag:
            parser.add_argument(f"--{name}", dest=option.dest, default=None,
                               action=argparse.BooleanOptionalAction,
                               help=option.help.replace("%(default)s", shown))
        else:
            parser.add_argument(f"--{name}", dest=option.dest, default=None,
                               metavar=option.metavar,
                               help=option.help.replace("%(default)s", shown), **extra)
    for name, ours in REPORTS.items():
        option = BY_DEST[ours]
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), default=None,
                           metavar="PATH", help=f"{option.help} (the chat metrics of every "
                           "worker, merged; written by the master)")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """A user class's validated config and the base URL its sessions use."""

    config: LoadTestConfig
    base_url: str
    processes_run: bool
    """True under ``supervisor loadtest --processes`` (the run file gave everything)."""
    report_path: str | None = None
    """Processes run: where the master writes the JSON report for the parent to read."""


def _login_from(value: Any) -> Login | None:
    if value is None:
        return None
    return Login(value["user"], value["password"])


def read_run_file(path: str) -> RunSettings:
    """The settings ``supervisor loadtest --processes`` wrote for its Locust processes."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    values = dict(data["config"])
    values["login"] = _login_from(values.get("login"))
    values["target_option"] = tuple(values.get("target_option") or ())
    known = set(LoadTestConfig.__dataclass_fields__)
    config = LoadTestConfig(**{key: value for key, value in values.items() if key in known})
    return RunSettings(config, data["base_url"], processes_run=True,
                       report_path=data.get("report_path"))


def write_run_file(path: str, config: LoadTestConfig, base_url: str, report_path: str) -> None:
    """The run file (mode 0600: it may hold a password or a JWT secret)."""
    values: dict[str, Any] = {}
    for key in LoadTestConfig.__dataclass_fields__:
        value = getattr(config, key)
        if isinstance(value, Login):
            value = {"user": value.user, "password": value.password}
        elif isinstance(value, tuple):
            value = list(value)
        values[key] = value
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"config": values, "base_url": base_url, "report_path": report_path}, handle)


def settings_for(protocol: str, class_options: Mapping[str, Any], parsed: Any,
                 host: str | None) -> RunSettings:
    """The config of a user class: run file, else defaults < env < class options < flags.

    ``parsed`` is Locust's ``environment.parsed_options`` (None in library use).
    Raises :class:`~supervisor.loadtest.values.ConfigError` naming the bad value.
    """
    run_file = os.environ.get(RUN_FILE_ENV)
    if run_file:
        return read_run_file(run_file)
    unknown = sorted(set(class_options) - {name.replace("-", "_") for name in SHARED})
    if unknown:
        raise ConfigError(f"options: unknown or not settable here: {', '.join(unknown)}",
                          f"use the names of these options: {', '.join(SHARED)}")
    if not host:
        raise ConfigError("no target: the user class has no host",
                          "give Locust's --host URL (or set 'host' on the class)")
    given: dict[str, Any] = {option.dest: None for option in BY_DEST.values()}
    given.update(class_options)
    for name in SHARED:
        dest = name.replace("-", "_")
        value = getattr(parsed, dest, None) if parsed is not None else None
        if value is not None:
            given[dest] = value
    for name, ours in REPORTS.items():
        given[ours] = getattr(parsed, name.replace("-", "_"), None) if parsed else None
    users = getattr(parsed, "num_users", None) if parsed is not None else None
    spawn_rate = getattr(parsed, "spawn_rate", None) if parsed is not None else None
    run_time = getattr(parsed, "run_time", None) if parsed is not None else None
    given.update(target=host, protocol=protocol, sessions=users or 1,
                 spawn_rate=spawn_rate or 1.0, duration=run_time or LOCUST_DEFAULT_DURATION,
                 runtime="gevent", quiet=True, config=None)
    config = resolve(argparse.Namespace(**given), os.environ)
    return RunSettings(config, host, processes_run=False)
