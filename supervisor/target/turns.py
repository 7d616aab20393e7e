"""One chat turn: store the user's message, stream an echo reply, end the task.

The events and their order follow a Chainlit app whose ``on_message`` streams
a ``cl.Message``: ``task_start``; ``first_interaction`` on a thread's first
message; ``stream_start`` carrying the *first* token (Chainlit sends no
``stream_token`` for it); one ``stream_token`` per further token;
``new_message`` with the whole step; ``task_end``. A text starting with
``/ask`` first asks the client (``ask`` with an ack, as ``cl.AskUserMessage``)
and echoes the answer.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import socketio  # type: ignore[import-untyped]

from supervisor._logging import get_logger
from supervisor.target.faults import CUT_EVENT, FaultInjector
from supervisor.target.message_log import MessageLog
from supervisor.target.options import TargetOptions
from supervisor.target.sessions import ChatSession
from supervisor.target.threads import StepDict, ThreadStore, utc_now

logger = get_logger(__name__)

ASSISTANT = "Assistant"  # Chainlit's default ``config.ui.name``
ASK_PREFIX = "/ask"


def assistant_step(thread_id: str, output: str, **extra: Any) -> StepDict:
    """A step dict shaped like ``cl.Message.to_dict()`` for an assistant message."""
    now = utc_now()
    step: StepDict = {
        "id": str(uuid.uuid4()), "threadId": thread_id, "parentId": None,
        "createdAt": now, "command": None, "modes": None, "start": now, "end": now,
        "output": output, "name": ASSISTANT, "type": "assistant_message", "language": None,
        "streaming": False, "isError": False, "waitForAnswer": False, "metadata": {},
        "tags": None,
    }
    step.update(extra)
    return step


def user_step(thread_id: str, message: Any) -> StepDict:
    """The stored form of a client's message; ValueError where Chainlit's handler fails."""
    if not isinstance(message, dict):
        msg = "malformed client_message payload: no message object"
        raise ValueError(msg)
    # Chainlit asserts the client made the id with uuid4 (useChatInteract does).
    step_id = uuid.UUID(str(message.get("id")))
    if step_id.version != 4:
        msg = "AssertionError"  # what Chainlit's error message says for a non-v4 id
        raise ValueError(msg)
    step = dict(message)
    step.update({"id": str(step_id), "threadId": thread_id,
                 "output": str(message.get("output") or ""),
                 "type": message.get("type") or "user_message",
                 "createdAt": utc_now()})  # Chainlit overwrites the client's time
    return step


def reply_tokens(text: str, count: int | None) -> list[str]:
    """The echo of ``text`` as word tokens; ``count`` cycles the words to that many."""
    words = text.split() or ["(empty)"]
    if count is not None:
        words = list(itertools.islice(itertools.cycle(words), count))
    return [words[0], *(f" {word}" for word in words[1:])]


class TurnRunner:
    """Runs ``client_message`` turns for the Socket.IO handlers."""

    def __init__(self, sio: Any, options: TargetOptions, threads: ThreadStore,
                 faults: FaultInjector, messages: MessageLog | None = None) -> None:
        self._sio = sio
        self._options = options
        self._threads = threads
        self._faults = faults
        self._messages = messages

    async def emit(self, session: ChatSession, event: str, data: Any) -> None:
        """Emit to the session's live connection, as Chainlit's session-scoped emit does."""
        await self._sio.emit(event, data, to=session.sid)

    async def cut(self, session: ChatSession) -> None:
        """Drop the session's connection the way a network fault would."""
        logger.debug("target_cut_connection", sid=session.sid, session_id=session.session_id)
        if session.link is not None:
            # Through the send queue, so the reply's frames go out before the cut.
            await self._sio.emit(CUT_EVENT, to=session.sid)
        else:
            # Polling transport (or no cutter installed): the best left is a
            # server-side disconnect, which the client does see as deliberate.
            await self._sio.disconnect(session.sid)

    def store(self, session: ChatSession, step: StepDict) -> bool:
        """Append to the session's thread; True on the session's first interaction."""
        self._threads.append(session.thread_id, session.user, step)
        first = not session.has_first_interaction
        session.has_first_interaction = True
        return first

    async def run(self, session: ChatSession, payload: Any) -> None:
        """One turn. Turns of one session run one at a time, so history stays in order."""
        message = payload.get("message") if isinstance(payload, dict) else None
        async with session.turn_lock:
            await self.emit(session, "task_start", {})
            try:
                step = user_step(session.thread_id, message)
            except ValueError as exc:
                error = assistant_step(session.thread_id, str(exc), name="Error", isError=True)
                await self.emit(session, "new_message", error)
                await self.emit(session, "task_end", {})
                return
            if self._messages is not None:
                self._messages.record(session.session_id, session.thread_id, session.user,
                                      step["output"])
            if self.store(session, step):
                await self.emit(session, "first_interaction",
                                {"interaction": step["output"], "thread_id": session.thread_id})
            if self._options.drop_when == "on_message" and self._faults.should_drop():
                await self.cut(session)
                return
            # As Chainlit does (cot "full"): the turn runs inside an ``on_message``
            # run step whose parent is the user's message, so a client can tell
            # which reply answers which message.
            run_step = assistant_step(session.thread_id, "", name="on_message", type="run",
                                      parentId=step["id"], end=None)
            await self.emit(session, "new_message", run_step)
            text = step["output"]
            if text.startswith(ASK_PREFIX):
                text = await self._ask(session, text[len(ASK_PREFIX):].strip(), run_step["id"])
            await self._stream(session, text, run_step["id"])
            await self.emit(session, "update_message", dict(run_step, end=utc_now()))
            await self.emit(session, "task_end", {})
        if self._options.drop_when == "after_reply" and self._faults.should_drop():
            await self.cut(session)

    async def _stream(self, session: ChatSession, text: str, parent_id: str) -> None:
        tokens = reply_tokens(text, self._options.reply_tokens)
        delay = self._options.token_delay
        reply = assistant_step(session.thread_id, tokens[0], streaming=True, parentId=parent_id)
        if delay:
            await asyncio.sleep(delay)
        await self.emit(session, "stream_start", reply)
        for token in tokens[1:]:
            if delay:
                await asyncio.sleep(delay)
            await self.emit(session, "stream_token", {"id": reply["id"], "token": token,
                                                      "isSequence": False, "isInput": False})
        final = dict(reply, output="".join(tokens), streaming=False, end=utc_now())
        self.store(session, final)
        await self.emit(session, "new_message", final)

    async def _ask(self, session: ChatSession, prompt: str, parent_id: str) -> str:
        """Ask the client (``ask`` with an ack) and return the text to echo back."""
        question = assistant_step(session.thread_id, prompt or "Your answer?", waitForAnswer=True,
                                  parentId=parent_id)
        self.store(session, question)
        spec = {"type": "text", "step_id": question["id"], "timeout": self._options.ask_timeout}
        try:
            answer = await self._sio.call("ask", {"msg": question, "spec": spec},
                                          to=session.sid, timeout=self._options.ask_timeout)
        except socketio.exceptions.TimeoutError:
            await self.emit(session, "ask_timeout", {})
            reply = "no answer"
        else:
            await self.emit(session, "task_end", {})  # the user answered: their turn ended
            if isinstance(answer, dict):
                text = answer.get("output")
                try:
                    self.store(session, user_step(session.thread_id, answer))
                except ValueError:
                    logger.debug("target_ask_answer_not_stored", sid=session.sid)
            else:
                text = answer
            reply = f"you answered: {'' if text is None else text}"
            await self.emit(session, "clear_ask", {})
        # Chainlit restarts the task whether or not the user answered.
        await self.emit(session, "task_start", {})
        return reply
