"""Chainlit chat turns: the user's message payload and a tracker for the reply (pure).

Shapes checked against Chainlit's source and a live Chainlit 2.12 server:

* ``client_message`` payload (``libs/react-client/src/useChatInteract.ts``
  ``sendMessage``, ``frontend/src/components/chat/MessageComposer``): ``{"message":
  step, "fileReferences": [{"id"}...]}`` where the step has ``threadId``
  (the composer sends ``""``; the server takes the thread from the session),
  ``id`` (a UUID **v4**: ``emitter.process_message`` asserts it), ``name``,
  ``type: "user_message"``, ``output``, ``createdAt`` (``toISOString()``,
  overwritten by the server) and ``metadata``.
* Server side (``backend/chainlit/socket.py`` ``process_message``,
  ``callbacks.py``, ``emitter.py``, ``message.py``, ``step.py``):
  ``task_start`` ``{}``; a ``run`` step named ``on_message`` whose ``parentId``
  is the user's message id (``new_message`` when it opens, ``update_message``
  with ``end`` set when it closes); the app's steps nested under it; then
  ``task_end`` ``{}``. A streamed step sends ``stream_start`` with the whole
  step dict whose ``output`` already holds the first token, then
  ``stream_token`` ``{"id", "token", "isSequence", "isInput"}`` per further
  token (``isSequence``: the token replaces the text; ``isInput``: it belongs
  to the step's input); ``send()`` emits ``new_message`` and ``update()``
  ``update_message`` with the final ``output``. Messages have type
  ``assistant_message``; tool, LLM and run steps have other types.
* ``task_end`` carries no id, and other tasks send it too: the answer to
  ``connection_successful`` (which can arrive after a message sent at once),
  ``on_chat_start`` (wrapped in its own ``task_start``/``task_end``, and it
  runs concurrently with the first message), and ``AskUserMessage`` (a
  ``task_end`` once the ask is answered, then ``task_start``; after an
  ``ask_timeout`` only the ``task_start``).

So a tracker that knows the message id follows the step tree under it and
ends the turn when the ``on_message`` run step anchored to that id closes.
Servers that send no such run step (or a tracker without a message id) fall
back to counting ``task_start``/``task_end`` pairs, skipping the ask pair.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

USER_MESSAGE = "user_message"
ASSISTANT_MESSAGE = "assistant_message"


def iso_timestamp(when: datetime | float) -> str:
    """JavaScript's ``toISOString()`` (UTC, milliseconds, ``Z``) of epoch seconds or a datetime."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            msg = "created_at must be timezone-aware (or epoch seconds)"
            raise ValueError(msg)
        moment = when.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(when, UTC)
    # isoformat is C code: strftime was 1.2 % of a load test's CPU at 300 sessions.
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def user_message(text: str, thread_id: str | None, message_id: str,
                 created_at: str | datetime | float, *, author: str = "User",
                 file_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``client_message`` payload Chainlit's React client sends for one user message.

    ``message_id`` must be a UUID v4 (Chainlit asserts it); ``created_at`` is an
    ISO-8601 string, an aware datetime or epoch seconds. ``file_ids`` are ids of
    files uploaded beforehand.
    """
    if not isinstance(text, str):
        msg = f"chat text must be a str, not {type(text).__name__}"
        raise TypeError(msg)
    try:
        version = uuid.UUID(message_id).version
    except (TypeError, ValueError, AttributeError):
        version = None
    if version != 4:
        msg = f"Chainlit message ids must be UUID v4 strings, got {message_id!r}"
        raise ValueError(msg)
    return {
        "message": {
            "threadId": thread_id or "",
            "id": message_id,
            "name": author,
            "type": USER_MESSAGE,
            "output": text,
            "createdAt": created_at if isinstance(created_at, str) else iso_timestamp(created_at),
            "metadata": {},
        },
        "fileReferences": [{"id": file_id} for file_id in file_ids],
    }


@dataclass(frozen=True, slots=True)
class TurnResult:
    """One chat turn, timed from the moment the user's message was written."""

    text: str
    """The reply: the final text of each assistant message of the turn, joined by newlines."""
    first_token_s: float | None
    """Seconds to the first reply text (streamed or not); None if none came."""
    token_gaps_s: tuple[float, ...]
    """Seconds between consecutive streamed reply tokens."""
    turn_s: float | None
    """Seconds to the ``task_end`` that ended the turn; None if it has not ended."""
    tokens: int
    """Streamed reply tokens (the first one rides on ``stream_start``); 0 if not streamed."""
    steps: tuple[dict[str, Any], ...] = field(default=())
    """Every step of the turn but the user's own, latest version, in order of appearance."""


@dataclass(slots=True)
class _Step:
    record: dict[str, Any]
    text: str = ""


class TurnTracker:
    """Follows one chat turn from inbound events; the clock is injected (``now``).

    ``message_id`` is the id of the user's message (``user_message``): with it
    the tracker keeps only that turn's steps, so several turns in flight can
    each be fed every event. Without it, the first ``on_message`` run step is
    taken as the turn's own.
    """

    def __init__(self, sent_at: float, message_id: str | None = None) -> None:
        self.sent_at = sent_at
        """When the user's message was written (same clock as ``feed``'s ``now``)."""
        self.message_id = message_id
        self.first_token_at: float | None = None
        self.token_times: list[float] = []
        self.ended_at: float | None = None
        self._steps: dict[str, _Step] = {}  # this turn's steps, in order of appearance
        self._tree: set[str] = {message_id} if message_id is not None else set()
        self._run_id: str | None = None  # the on_message run step anchored to the turn
        self._depth = 0  # task_start minus task_end, for servers without run steps
        self._started = False
        self._asks = 0  # asks awaiting their temporary task_end
        self._skip_starts = 0  # task_starts that resume an answered ask

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def text(self) -> str:
        """The reply so far (see ``TurnResult.text``)."""
        return "\n".join(step.text for step in self._steps.values()
                         if _is_reply(step.record) and step.text)

    @property
    def steps(self) -> tuple[dict[str, Any], ...]:
        return tuple(dict(step.record) for step in self._steps.values())

    def feed(self, name: str, data: Any, now: float) -> bool:
        """Consume one inbound event; True once the turn has ended."""
        if self.ended_at is not None:
            return True
        if name in ("task_start", "task_end", "ask", "ask_timeout"):
            self._on_task(name, now)
        elif name == "stream_start":
            self._on_step(data, now, streamed=True)
        elif name == "stream_token":
            self._on_token(data, now)
        elif name in ("new_message", "update_message"):
            step_id = self._on_step(data, now, streamed=False)
            if (name == "update_message" and step_id is not None and step_id == self._run_id
                    and data.get("end", True)):
                self.ended_at = now  # the on_message run closed: the turn is over
        return self.ended_at is not None

    def _on_task(self, name: str, now: float) -> None:
        if name == "ask":
            self._asks += 1
        elif name == "ask_timeout":
            if self._asks:
                self._asks -= 1
                self._skip_starts += 1
        elif name == "task_start":
            if self._skip_starts:
                self._skip_starts -= 1
            else:
                self._depth += 1
                self._started = True
        elif self._asks:  # task_end: the ask was answered; the task goes on
            self._asks -= 1
            self._skip_starts += 1
        elif self._depth:
            self._depth -= 1
            if self._depth == 0 and self._run_id is None and self._anchored():
                self.ended_at = now

    def _anchored(self) -> bool:
        """Whether the task that just ended was this turn's (no run step to go by).

        A task that produced none of this turn's steps (``on_chat_start``'s, or the
        ``task_end`` answering ``connection_successful``) was not.
        """
        return self._started and bool(self._steps)

    def _joins(self, record: dict[str, Any]) -> bool:
        """Whether a step belongs to this turn (and so joins its tree)."""
        step_id, parent = record["id"], record.get("parentId")
        if step_id in self._tree:
            return True
        if not isinstance(parent, str | None):
            return False  # a malformed step (parentId must be a string): not this turn's
        is_run = record.get("type") == "run"
        if (is_run and self._run_id is None and
                (parent == self.message_id if self.message_id is not None
                 else record.get("name") == "on_message")):
            self._run_id = step_id
        elif not (parent in self._tree or (not parent and not is_run)):
            return False  # another task's step (on_chat_start's, another turn's)
        self._tree.add(step_id)
        return True

    def _on_step(self, data: Any, now: float, *, streamed: bool) -> str | None:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return None
        if data.get("type") == USER_MESSAGE or not self._joins(data):
            return None  # the user's own message echoed back, or not this turn's
        step_id: str = data["id"]
        step = self._steps.get(step_id)
        if step is None:
            step = self._steps[step_id] = _Step(dict(data))
        else:
            step.record.update(data)
        output = data.get("output")
        if output is not None:
            step.text = output if isinstance(output, str) else _as_text(output)
            if _is_reply(step.record) and step.text:
                if streamed:
                    self._token(now)  # stream_start carries the first token
                elif self.first_token_at is None:
                    self.first_token_at = now  # a reply that was not streamed
        return step_id

    def _on_token(self, data: Any, now: float) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return
        token, step = data.get("token"), self._steps.get(data["id"])
        if step is None or data.get("isInput") or not isinstance(token, str):
            return  # not this turn's stream (its stream_start decided), or input
        step.text = token if data.get("isSequence") else step.text + token
        step.record["output"] = step.text
        if _is_reply(step.record):
            self._token(now)

    def _token(self, now: float) -> None:
        self.token_times.append(now)
        if self.first_token_at is None:
            self.first_token_at = now

    def result(self) -> TurnResult:
        """The turn so far, relative to ``sent_at`` (``turn_s`` is None until it ended)."""
        first, ended = self.first_token_at, self.ended_at
        times = self.token_times
        return TurnResult(
            text=self.text,
            first_token_s=None if first is None else first - self.sent_at,
            token_gaps_s=tuple(later - earlier for earlier, later in itertools.pairwise(times)),
            turn_s=None if ended is None else ended - self.sent_at,
            tokens=len(times),
            steps=self.steps,
        )


def _as_text(value: Any) -> str:
    """A non-string step output as text; never raises (deeply nested data has no text)."""
    try:
        return str(value)
    except (ValueError, RecursionError):
        return ""


def _is_reply(record: dict[str, Any]) -> bool:
    """Assistant messages are the reply (a step without a type counts as one)."""
    return bool(record.get("type", ASSISTANT_MESSAGE) == ASSISTANT_MESSAGE)
