"""The target's message log: one JSON line per chat message a client sent.

Load tests and their tests read it to see what the clients said
(``supervisor target --message-log PATH``): ``time``, ``session_id``,
``thread_id``, ``user`` and ``text``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import IO


class MessageLog:
    """Appends one JSON line per user message to a file; does nothing without a path."""

    def __init__(self, path: str | Path | None) -> None:
        self._lock = threading.Lock()
        # Line-buffered, so a reader sees each record as it happens.
        self._file: IO[str] | None = (
            Path(path).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by close()
            if path is not None else None)

    def record(self, session_id: str, thread_id: str, user: str | None, text: str) -> None:
        """One message the client sent."""
        if self._file is None:
            return
        line = json.dumps({"time": time.time(), "session_id": session_id,
                           "thread_id": thread_id, "user": user, "text": text})
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
