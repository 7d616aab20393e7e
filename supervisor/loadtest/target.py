"""The server under load: the embedded target in a child process, or a reachable URL.

The embedded target runs as ``python -m supervisor.loadtest.embedded`` (that is,
``supervisor target`` with a watchdog), not in a thread of the load test:

- the measured client and the server do not share one interpreter lock, so
  the server's event loop does not inflate the client's latencies (and the
  reverse), and on two cores each gets one;
- uvicorn's asyncio loop never has to run under gevent's monkey-patching;
- it runs in its own session, so a terminal's Ctrl-C reaches the load test
  alone, which then stops its sessions before the server goes;
- it exits by itself when its stdin closes, which happens when the load test
  exits for any reason, even ``kill -9``: no orphaned server.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import queue
import resource
import socket
import subprocess
import sys
import tempfile
import threading
from typing import IO, NoReturn
from urllib.parse import urlsplit, urlunsplit

from supervisor.loadtest.config import LoadTestConfig
from supervisor.loadtest.values import ConfigError, parse_bool
from supervisor.target.command import add_arguments, options_from_args
from supervisor.target.options import TargetOptions

ANNOUNCEMENT = "supervisor target listening on "
"""The line ``supervisor target`` prints once its port is bound."""

ECHO_PATH = "/ws/echo"
SOCKETIO_PATH = "/ws/socket.io"
DEFAULT_REPLY_TOKENS = "5"
"""The embedded target streams each reply in this many tokens unless told otherwise,
so a default run shows gaps between tokens, not only the first one."""
_RESERVED = frozenset({"host", "port", "log-level"})
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class TargetError(Exception):
    """The target cannot be used (unreachable, or the embedded one did not start)."""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def embedded_arguments(config: LoadTestConfig) -> list[str]:
    """``supervisor target`` arguments for ``--target-option`` items; ConfigError if bad.

    They are checked here with the target's own parser and validation, so a
    typo fails at once with exit status 2, not after a child process started.
    """
    flags = {item.name for item in dataclasses.fields(TargetOptions) if item.type == "bool"}
    argv: list[str] = []
    given: set[str] = set()
    for item in config.target_option:
        key, sep, value = item.partition("=")
        name = key.strip().replace("_", "-")
        given.add(name)
        fix = "see 'supervisor target --help' for the options"
        if name in _RESERVED:
            raise ConfigError(f"--target-option {item}: the load test sets {name} itself",
                              "leave it out")
        if name.replace("-", "_") in flags:
            if parse_bool(value if sep else "true", f"--target-option {name}"):
                argv.append(f"--{name}")
        elif not sep:
            raise ConfigError(f"--target-option {item} needs a value", f"write {key}=VALUE; {fix}")
        else:
            argv.extend((f"--{name}", value))
    if "reply-tokens" not in given:
        argv.extend(("--reply-tokens", DEFAULT_REPLY_TOKENS))
    if config.seed is not None and "seed" not in given:
        argv.extend(("--seed", str(config.seed)))
    if config.jwt_secret is not None and "secret" not in given:
        argv.extend(("--secret", config.jwt_secret))
    parser = _RaisingParser(prog="supervisor target", add_help=False)
    add_arguments(parser)
    try:
        options_from_args(parser.parse_args(argv))
    except ValueError as exc:
        shown = " ".join(config.target_option) or "(none)"
        raise ConfigError(f"--target-option {shown}: {exc}",
                          "see 'supervisor target --help' for the options") from None
    return argv


class EmbeddedTarget:
    """``supervisor target`` on a free loopback port, in a child process."""

    def __init__(self, arguments: list[str]) -> None:
        self.arguments = arguments
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.rss_peak_mib: float | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Start the child and return its base URL; TargetError if it does not come up."""
        command = [sys.executable, "-m", "supervisor.loadtest.embedded", "--host", "127.0.0.1",
                   "--port", "0", "--log-level", "warning", *self.arguments]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_drain, args=(self._proc, lines), daemon=True,
                         name="embedded-target-stdout").start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None or not line.startswith(ANNOUNCEMENT):
            log = self._tail()
            self.stop()
            why = "exited" if self._proc.poll() is not None else f"did not start in {timeout:g}s"
            raise TargetError(f"the embedded target {why}" + (f": {log}" if log else ""))
        self.url = line[len(ANNOUNCEMENT):].strip()
        return self.url

    def _tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(lines[-3:])

    def stop(self, timeout: float = 10.0) -> None:
        """Close the child's stdin (it shuts down gracefully); kill it if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        # ru_maxrss of waited-for children: the largest one's peak, in KiB on Linux.
        self.rss_peak_mib = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None


def _drain(proc: subprocess.Popen[bytes], lines: queue.Queue[str | None]) -> None:
    """Pass the child's stdout lines on (and keep reading, so its pipe never fills)."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        lines.put(raw.decode("utf-8", "replace"))
    lines.put(None)


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """A TCP connect to the URL's host and port; TargetError says why it failed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except ConnectionRefusedError:
        why = "connection refused"
    except socket.gaierror:
        why = f"unknown host {host!r}"
    except TimeoutError:
        why = f"no answer within {timeout:g}s"
    except OSError as exc:
        why = exc.strerror or str(exc)
    msg = f"cannot reach {url}: {why} (is the server running? check --target)"
    raise TargetError(msg)


def session_url(config: LoadTestConfig, base: str) -> str:
    """The URL sessions connect to: Socket.IO takes the base, WebSocket an endpoint."""
    if config.protocol == "socketio" and config.embedded:
        return base + SOCKETIO_PATH  # Chainlit's Engine.IO path, not /socket.io
    if config.protocol != "websocket":
        return base
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    path = ECHO_PATH if config.embedded else parts.path
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))
