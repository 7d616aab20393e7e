"""Locust users for chat servers: one supervised session per Locust user (extra ``[locust]``).

A locustfile of two lines runs ``supervisor loadtest``'s scenario under Locust::

    from supervisor.locust import ChainlitUser
    class Chat(ChainlitUser): pass

``locust -f chat.py --host http://127.0.0.1:8000`` then logs in (``--login``),
chats and switches threads with Resume, and reports ``connect``, ``resume``,
``first_token`` and ``turn`` as Locust requests. In a distributed run
(``--master`` / ``--worker``) each worker's HDR histograms ride Locust's worker
reports, and the master writes this project's report (``--chat-json``,
``--chat-csv``, ``--chat-html``) from the merged histograms. See
``docs/distributed.md``.

The user classes are imported on first access, because importing Locust
monkey-patches the process with gevent: ``supervisor.locust.processes``
(``supervisor loadtest --processes``) lives here and must not do that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.locust._users import (
        ChainlitUser,
        ChatSession,
        SocketIOUser,
        SupervisedUser,
        WebSocketUser,
    )

__all__ = ["ChainlitUser", "ChatSession", "SocketIOUser", "SupervisedUser", "WebSocketUser"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from supervisor.locust import _users  # noqa: PLC0415 - imports Locust (and gevent)

        return getattr(_users, name)
    msg = f"module 'supervisor.locust' has no attribute {name!r}"
    raise AttributeError(msg)
