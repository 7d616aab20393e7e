"""Supervised WebSocket, Socket.IO and Chainlit sessions, with race-free thread Resume.

Layers, top to bottom; each imports only from the layers below it:

    cli, loadtest          command line, load tests, reports
    supervisor.py          Supervisor facade + _supervisor_actor: restarts, budgets, admission
    session.py             Session handle + _session_actor: state machine, generation, outbox
    _transport.py          websocket-client connect + reader thread, cookie isolation
    protocols/             pure framing and identity: websocket | socketio | chainlit;
                           reads a ProtocolConfig, imports nothing above itself

The library never configures logging; see ``docs/logging.md``.
"""

from __future__ import annotations

from supervisor.errors import (
    ConnectionLost,
    HandshakeError,
    HandshakeRefused,
    MalformedAck,
    OutboxFull,
    ProtocolRefused,
    SessionClosed,
    SessionCrashed,
    SessionFailed,
    SupervisorError,
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
from supervisor.session import Session
from supervisor.spec import SessionSpec
from supervisor.supervisor import Supervisor

__version__ = "0.1.0"

__all__ = [
    "ConnectionLost",
    "Event",
    "HandshakeError",
    "HandshakeRefused",
    "Lifecycle",
    "LifecycleKind",
    "MalformedAck",
    "OutboxFull",
    "ProtocolRefused",
    "RestartPolicy",
    "RestartType",
    "ResumeResult",
    "Session",
    "SessionClosed",
    "SessionCrashed",
    "SessionFailed",
    "SessionSpec",
    "SessionState",
    "SessionStatus",
    "Supervisor",
    "SupervisorError",
]
