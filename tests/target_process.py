"""The embedded target in a subprocess, for tests that also run under gevent.

A subprocess is a real peer in both runtimes (the target's asyncio server would
not run in a gevent-patched test process); its JSON-lines handshake log tells
which identity each connect carried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Self

_LAUNCH = "import sys; from supervisor.target import main; sys.exit(main(sys.argv[1:]))"


class TargetProcess:
    """``supervisor target`` on a free loopback port, with a handshake log."""

    def __init__(self, *flags: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="target-")
        self.log_path = Path(self._dir.name) / "handshakes.jsonl"
        self._flags = flags
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> Self:
        command = [sys.executable, "-c", _LAUNCH, "--port", "0", "--log-level", "warning",
                   "--handshake-log", str(self.log_path), *self._flags]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self._proc.stdout is not None
        # readline blocks until the target announces itself or dies (EOF).
        line = _readline(self._proc, timeout)
        if "listening on " not in line:
            self.stop()
            msg = f"target did not start: {line!r}"
            raise RuntimeError(msg)
        self.url = line.rsplit(" ", 1)[1].strip()
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._dir.cleanup()

    def handshakes(self) -> list[dict[str, Any]]:
        """Every connect attempt so far, oldest first."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line, or "" when the process exits or ``timeout`` passes."""
    import selectors  # noqa: PLC0415 - only needed here

    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return proc.stdout.readline()
