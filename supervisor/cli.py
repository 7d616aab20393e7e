"""The ``supervisor`` command: ``supervisor loadtest`` and ``supervisor target``.

``--runtime gevent`` needs ``gevent.monkey.patch_all()`` before anything imports
threading, socket or ssl, so :func:`main` looks for it first, with nothing but
the standard library, and this module imports the library only inside
functions. ``supervisor/__init__.py`` leaves pykka and websocket-client out
until ``Session`` or ``Supervisor`` is first read, so from the command line
:func:`main` patches in place. When they are loaded already (``main`` called
from a program that imported them), patching in place would leave their
import-time references to the real socket and thread primitives, so
:func:`main` restarts the interpreter (``os.execv``, same process id) with a
first statement that patches, then runs the same command line.
"""

from __future__ import annotations

import argparse  # the standard library's; it touches neither sockets nor threads
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

GEVENT_HINT = "from your checkout: pip install -e '.[gevent]'"
_GEVENT_BOOT = ("import sys; from supervisor.cli import main, _patch_gevent; _patch_gevent(); "
                "sys.exit(main(sys.argv[1:]))")
_PATCH_SENSITIVE = ("ssl", "websocket", "pykka", "http.client", "urllib.request")
"""Modules that keep references to socket or thread primitives once imported."""


def _option_value(args: Sequence[str], name: str) -> str | None:
    """The last value given to ``--name VALUE`` or ``--name=VALUE`` (a light scan)."""
    value = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def requested_runtime(args: Sequence[str], environ: Mapping[str, str]) -> str:
    """``--runtime`` with the loadtest precedence: flag > environment > config file."""
    if not args or args[0] != "loadtest":
        return "threads"
    value = _option_value(args, "--runtime") or environ.get("SUPERVISOR_RUNTIME", "").strip()
    if not value:
        path = _option_value(args, "--config") or environ.get("SUPERVISOR_CONFIG")
        if path:
            import tomllib  # noqa: PLC0415 - only when a config file may name the runtime

            try:
                with open(path, "rb") as handle:
                    table = tomllib.load(handle).get("loadtest", {})
                value = str(table.get("runtime", ""))
            except (OSError, ValueError, AttributeError):
                value = ""  # the full parse reports a broken file properly
    return (value or "threads").strip().lower()


def _patch_gevent() -> None:
    """``gevent.monkey.patch_all()``, its plugin lookups answered from one scan.

    ``patch_all`` asks ``importlib.metadata`` for its plugins' entry points 25
    times, and each ask reads the metadata of every installed distribution:
    with this project's test and benchmark extras installed (171
    distributions), about 0.4 s of CPU at every start of a gevent load test
    (0.54 s against 0.98 s for the whole patch, measured here). The
    installed distributions do not change while it patches, so one scan
    answers every ask the same way.
    """
    from importlib import metadata  # noqa: PLC0415 - only on the gevent path

    from gevent import monkey  # type: ignore[import-untyped]  # noqa: PLC0415

    scan = metadata.entry_points
    installed = scan()

    def select(**params: str) -> object:  # EntryPoints (typeshed types 3.11's vaguely)
        return installed.select(**params)

    metadata.entry_points = select  # type: ignore[assignment]
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = scan


def _gevent_first(args: list[str]) -> int | None:
    """Patch with gevent before anything else; None to go on, or an exit status."""
    try:
        from gevent import monkey  # noqa: PLC0415
    except ImportError:
        print(f"supervisor loadtest: error: --runtime gevent needs gevent ({GEVENT_HINT})",
              file=sys.stderr)
        return 2
    if monkey.is_module_patched("socket"):
        return None
    if not any(name in sys.modules for name in _PATCH_SENSITIVE):
        _patch_gevent()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-c", _GEVENT_BOOT, *args])  # noqa: S606
    return None  # pragma: no cover - execv does not return


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``supervisor`` console script and ``python -m supervisor``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if requested_runtime(args, os.environ) == "gevent":
        status = _gevent_first(args)
        if status is not None:
            return status
    if args and args[0] == "target":
        from supervisor.target.command import main as target_main  # noqa: PLC0415

        return target_main(args[1:])
    parser = build_parser()
    namespace, extras = parser.parse_known_args(args)
    if extras:
        # Reported by the subcommand's parser, so the message names it.
        sub = parser.loadtest if namespace.command == "loadtest" else None
        (sub or parser).error(
            f"unrecognized arguments: {' '.join(extras)}")
    if namespace.command != "loadtest":
        parser.print_help(sys.stderr)
        return 2
    return _loadtest(namespace)


def _loadtest(namespace: argparse.Namespace) -> int:
    from supervisor import _collector  # noqa: PLC0415 - see the module docstring
    from supervisor.loadtest.config import resolve  # noqa: PLC0415 - see the module docstring
    from supervisor.loadtest.runner import run  # noqa: PLC0415
    from supervisor.loadtest.values import ConfigError  # noqa: PLC0415

    try:
        config = resolve(namespace)
        if config.runtime == "gevent" and not _gevent_patched():
            raise ConfigError("--runtime gevent was not applied at start-up",
                              "give it on the command line")
        if config.processes != 1:  # locust concern (issue 10): Locust's engine, N workers
            from supervisor.locust.processes import run_processes  # noqa: PLC0415

            return run_processes(config)
        _collector.settle()  # start-up is over: this process now holds sessions
        return run(config)
    except ConfigError as exc:
        print(f"supervisor loadtest: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("supervisor loadtest: interrupted before the run began", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse errors as one line and a pointer to --help, not the usage block."""

    loadtest: argparse.ArgumentParser | None = None

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> _Parser:
    """The ``supervisor`` parser with its subcommands."""
    from supervisor.loadtest.config import add_arguments as loadtest_arguments  # noqa: PLC0415
    from supervisor.target.command import add_arguments as target_arguments  # noqa: PLC0415

    parser = _Parser(
        prog="supervisor",
        description="Supervised WebSocket, Socket.IO and Chainlit sessions: load tests "
                    "and an embedded Chainlit-compatible target server.",
        epilog="Start with 'supervisor loadtest': it needs no server of your own.")
    from supervisor import __version__  # noqa: PLC0415

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND",
                                     parser_class=_Parser)
    loadtest = commands.add_parser(
        "loadtest", help="run a load test (default: against the embedded target)",
        description="Open many supervised chat sessions against a server, chat and switch "
                    "threads with Resume, and report connect, resume and reply latencies. "
                    "Without --target it starts the embedded target on a free loopback "
                    "port. Options may also come from a config file (--config) or from "
                    "SUPERVISOR_<OPTION> environment variables; flags win.",
        epilog="Examples: supervisor loadtest | supervisor loadtest --target "
               "http://127.0.0.1:8000 --login 'user{n}:secret' --sessions 500 --json "
               "report.json | supervisor loadtest --protocol websocket --target "
               "ws://127.0.0.1:8000/ws/echo | supervisor loadtest --stages 30s:100,2m:100,30s:0 "
               "--threshold 'turn.p99<2s'. Exit status: 0 passed, 1 a threshold failed "
               "(including --fail-on-error-rate), 2 bad input, 3 target unreachable or no "
               "session ever connected.")
    loadtest_arguments(loadtest)
    parser.loadtest = loadtest
    target = commands.add_parser(
        "target", help="run the embedded Chainlit-compatible chat server",
        description="Run the embedded Chainlit-compatible chat server in the foreground.")
    target_arguments(target)
    return parser
