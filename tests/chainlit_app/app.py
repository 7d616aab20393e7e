"""A small Chainlit echo app for the interop tests (run by ``harness.ChainlitApp``).

The same file runs on Chainlit 2.12 (the test extra), 2.0.1 and 1.3.2 (their own
virtualenvs, ``tests/interop/setup.sh``).

- Password login for two users, ``alice``/``alice-pw`` and ``bob``/``bob-pw``.
- Threads persist in SQLite through Chainlit's ``SQLAlchemyDataLayer``; the file
  comes from ``SUPERVISOR_CHAINLIT_DB`` and its tables must exist already
  (``schema.create_schema``).
- Every message gets a streamed echo reply, ``echo: <text>``, a word per token.
  A message starting with ``/ask`` first asks "your name?" and the reply becomes
  ``echo: <text> (name: <answer>)``.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

import chainlit as cl
import chainlit.data
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.types import ThreadDict

DB_ENV = "SUPERVISOR_CHAINLIT_DB"

USERS = {
    "alice": ("alice-pw", {"role": "user", "team": "a"}),
    "bob": ("bob-pw", {"role": "user", "team": "b"}),
}

ASK_PREFIX = "/ask"
ASK_TIMEOUT_S = 10


@cl.password_auth_callback
async def auth(username: str, password: str) -> cl.User | None:
    """Accept the two fixed test users; anything else is refused (HTTP 401)."""
    entry = USERS.get(username)
    if entry is None or not hmac.compare_digest(entry[0], password):
        return None
    return cl.User(identifier=username, metadata=dict(entry[1]))


# On SQLite (no JSONB) Chainlit's SQLAlchemy layer returns a thread's ``metadata`` as
# the JSON string it stored; 1.x and 2.0.x then call ``metadata.copy()`` when resuming.
# Later versions parse it themselves (2.12 is left exactly as it ships).
DECODE_METADATA = cl.__version__.startswith(("1.", "2.0."))


class SQLiteDataLayer(SQLAlchemyDataLayer):
    """Chainlit's SQLAlchemy layer, with thread metadata decoded on read where needed."""

    async def get_thread(self, thread_id: str) -> Any:
        thread = await super().get_thread(thread_id)
        if DECODE_METADATA and thread is not None and isinstance(thread.get("metadata"), str):
            thread["metadata"] = json.loads(thread["metadata"] or "{}")
        return thread


def data_layer() -> SQLiteDataLayer:
    """SQLite data layer on the harness's per-run file."""
    return SQLiteDataLayer(conninfo=f"sqlite+aiosqlite:///{os.environ[DB_ENV]}")


if cl.__version__.startswith("1."):  # 1.x reads the module global
    chainlit.data._data_layer = data_layer()  # type: ignore[attr-defined]
else:
    cl.data_layer(data_layer)


@cl.on_chat_start
async def on_chat_start() -> None:
    """A new conversation: nothing to send."""


@cl.on_chat_resume
async def on_chat_resume(thread: ThreadDict) -> None:
    """Accept every resume Chainlit lets through (it has checked the thread's author)."""


@cl.on_message
async def on_message(message: cl.Message) -> None:
    """Stream ``echo: <text>`` back; ``/ask`` first asks for a name."""
    text = message.content
    suffix = ""
    if text.startswith(ASK_PREFIX):
        answer = await cl.AskUserMessage(content="your name?", timeout=ASK_TIMEOUT_S).send()
        name = answer["output"] if answer else "<no answer>"
        suffix = f" (name: {name})"
    tokens = ["echo:", *(f" {word}" for word in text.split())]
    if suffix:
        tokens.append(suffix)
    reply = cl.Message(content="")
    for token in tokens:
        await reply.stream_token(token)
    await reply.send()
