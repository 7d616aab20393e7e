"""Supervised WebSocket, Socket.IO and Chainlit sessions, with race-free thread Resume.

Layers, top to bottom; each imports only from the layers below it (and its
own), as ``tests/test_layers.py`` checks:

    cli, loadtest, target  command line, load tests, reports, the embedded server
    aio, prometheus        asyncio face; Prometheus collector (optional extras)
    supervisor.py          Supervisor facade + _supervisor_actor: restarts, budgets;
                           session.py, the Session handle; _metrics, health
    _session_actor.py      thin driver: feeds the machine, carries out its effects;
                           _record (what outlives an actor), _callbacks, _actor_pool
                           (the workers that run session actors)
    _transport.py          websocket-client connect and lifecycle; _streams (reading,
                           writing, bounds) run by _reactor (one I/O loop for all,
                           waiting through _pollers), _frames (sans-IO decoder),
                           _reports, _wsclient (cookie isolation, deadlines); _http,
                           _admission, _timer, _futures, _logging, policy
    _machine.py            pure session machine: state, attempts, outbox, deadlines;
                           _machine_io (inputs, effects), _outgoing; no I/O, clock or ids
    errors, messages, spec pure records (and _supervision, the supervisor's messages)
    protocols/             pure framing and identity: websocket | socketio | chainlit;
                           reads a ProtocolConfig, imports nothing above itself
                           (the standard library, and orjson to read JSON)

The library never configures logging; see ``docs/logging.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor._lazy import on_first_use
from supervisor.errors import (
    ConnectionLost,
    DeadlineExceeded,
    EventsOverflowed,
    HandshakeError,
    HandshakeRedirected,
    HandshakeRefused,
    MalformedAck,
    MessageTooBig,
    OutboxFull,
    ProtocolRefused,
    ReplyTimeout,
    ResumeTimeout,
    SendTimeout,
    SessionClosed,
    SessionCrashed,
    SessionFailed,
    SupervisorError,
    SupervisorStopped,
)
from supervisor.messages import (
    Event,
    Lifecycle,
    LifecycleKind,
    ResumeResult,
    SessionState,
    SessionStatus,
)
from supervisor.policy import RestartPolicy, RestartType
from supervisor.spec import SessionSpec

if TYPE_CHECKING:
    from supervisor.session import Session
    from supervisor.supervisor import Supervisor

__version__ = "0.1.0"

# Imported when first read: they bring pykka, websocket-client and ssl, which
# ``supervisor loadtest --runtime gevent`` must patch first. With them left out of
# the package's import, the command patches in place instead of restarting Python.
__getattr__ = on_first_use(globals(), {"Session": "supervisor.session",
                                       "Supervisor": "supervisor.supervisor"})

__all__ = [
    "ConnectionLost",
    "DeadlineExceeded",
    "Event",
    "EventsOverflowed",
    "HandshakeError",
    "HandshakeRedirected",
    "HandshakeRefused",
    "Lifecycle",
    "LifecycleKind",
    "MalformedAck",
    "MessageTooBig",
    "OutboxFull",
    "ProtocolRefused",
    "ReplyTimeout",
    "RestartPolicy",
    "RestartType",
    "ResumeResult",
    "ResumeTimeout",
    "SendTimeout",
    "Session",
    "SessionClosed",
    "SessionCrashed",
    "SessionFailed",
    "SessionSpec",
    "SessionState",
    "SessionStatus",
    "Supervisor",
    "SupervisorError",
    "SupervisorStopped",
]
