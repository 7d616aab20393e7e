"""In-memory conversation threads: Chainlit's data layer, reduced to what resume needs.

Steps are stored as the step dicts that went over the wire, so a resume
replays exactly what the client saw. The event loop thread writes; tests and
the load tester read snapshots from other threads, hence the lock.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

StepDict = dict[str, Any]


def utc_now() -> str:
    """A timestamp in Chainlit's format: naive ISO 8601 in UTC with a ``Z``."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass(slots=True)
class _Thread:
    id: str
    owner: str | None  # user identifier; None when auth is off
    created_at: str
    name: str | None = None
    steps: list[StepDict] = field(default_factory=list)


class ThreadStore:
    """Threads by id, each owned by one user (or by nobody when auth is off)."""

    def __init__(self) -> None:
        self._threads: dict[str, _Thread] = {}
        self._lock = threading.Lock()

    def exists(self, thread_id: str) -> bool:
        """Whether the thread has been created (by a first message)."""
        with self._lock:
            return thread_id in self._threads

    def owner(self, thread_id: str) -> str | None:
        """The thread's owner; None for an unknown thread or one made with auth off."""
        with self._lock:
            thread = self._threads.get(thread_id)
            return thread.owner if thread is not None else None

    def append(self, thread_id: str, owner: str | None, step: StepDict) -> bool:
        """Store ``step`` in the thread, creating it if needed; True if it was created.

        A new thread is named after its first step's text, as Chainlit names a
        thread after the first interaction.
        """
        with self._lock:
            thread = self._threads.get(thread_id)
            created = thread is None
            if thread is None:
                thread = _Thread(id=thread_id, owner=owner, created_at=utc_now(),
                                 name=str(step.get("output") or "")[:100] or None)
                self._threads[thread_id] = thread
            thread.steps.append(copy.deepcopy(step))
            return created

    def get(self, thread_id: str) -> dict[str, Any] | None:
        """The thread as Chainlit's ``ThreadDict`` (the ``resume_thread`` payload), a copy."""
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                return None
            return {
                "id": thread.id,
                "createdAt": thread.created_at,
                "name": thread.name,
                "userId": thread.owner,
                "userIdentifier": thread.owner,
                "tags": None,
                "metadata": {},
                "steps": copy.deepcopy(thread.steps),
                "elements": [],
            }

    def __len__(self) -> int:
        with self._lock:
            return len(self._threads)
