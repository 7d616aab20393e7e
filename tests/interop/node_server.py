"""Run the official Node.js Socket.IO server (``node/server.js``) on loopback for a test.

The server prints one JSON record per line (``listening``, ``connection``,
``refused``, ``disconnect``); a reader thread collects them so a test can wait
on what the server saw, never sleep.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
SETUP_COMMAND = "bash tests/interop/setup.sh"

Record = dict[str, Any]


def require_node_server() -> None:
    """Skip (loudly, with the command that fixes it) when node or socket.io is missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the official Socket.IO server cannot run")
    if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        pytest.skip(f"socket.io is not installed for the interop tests: run {SETUP_COMMAND}")


class NodeSocketIOServer:
    """``node server.js`` in its own process; a context manager.

    ``url`` is ``http://127.0.0.1:PORT`` once started; ``records`` the server's log.
    """

    def __init__(self, *, ping_interval_ms: int = 25000, ping_timeout_ms: int = 20000,
                 start_timeout: float = 20.0) -> None:
        self.args = ["--ping-interval", str(ping_interval_ms),
                     "--ping-timeout", str(ping_timeout_ms)]
        self.start_timeout = start_timeout
        self.records: list[Record] = []
        self.url = ""
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> NodeSocketIOServer:
        node = shutil.which("node")
        assert node is not None
        self._proc = subprocess.Popen(
            [node, "server.js", *self.args], cwd=NODE_DIR, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, name="node-socketio-log", daemon=True)
        self._reader.start()
        try:
            listening = self.wait_for(lambda r: r.get("ev") == "listening", self.start_timeout)
        except TimeoutError:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{listening['port']}"
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> NodeSocketIOServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            record: Record
            try:
                record = json.loads(line)
            except ValueError:
                record = {"ev": "output", "line": line.rstrip("\n")}
            if not isinstance(record, dict):
                record = {"ev": "output", "line": line.rstrip("\n")}
            with self._cond:
                self.records.append(record)
                self._cond.notify_all()
        with self._cond:
            self.records.append({"ev": "exited"})
            self._cond.notify_all()

    def select(self, ev: str, **fields: Any) -> list[Record]:
        """The records of kind ``ev`` whose fields match ``fields``, in order."""
        with self._cond:
            return [r for r in self.records if r.get("ev") == ev
                    and all(r.get(key) == value for key, value in fields.items())]

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float = 10.0) -> Record:
        """The first record matching ``predicate``, waiting up to ``timeout`` seconds."""
        found: list[Record] = []

        def seen() -> bool:
            found[:] = [r for r in self.records if predicate(r)]
            return bool(found) or any(r.get("ev") == "exited" for r in self.records)

        with self._cond:
            self._cond.wait_for(seen, timeout)
        if not found:
            tail = self.records[-10:]
            msg = f"timed out after {timeout}s waiting for a server record; last: {tail}"
            raise TimeoutError(msg)
        return found[0]

    def wait_count(self, ev: str, count: int, timeout: float = 10.0, **fields: Any) -> list[Record]:
        """Wait until ``count`` records of kind ``ev`` matching ``fields`` exist; return them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.select(ev, **fields)) >= count, timeout)
        records = self.select(ev, **fields)
        if len(records) < count:
            msg = f"{len(records)} of {count} {ev} records after {timeout}s: {records}"
            raise TimeoutError(msg)
        return records
