"""Why no session connected: the likely cause, read from the failures seen (pure code).

The evidence is what the sessions' failed handshakes said, as
``"ErrorType: reason"`` strings with how often each was seen
(:meth:`~supervisor.loadtest.metrics.Metrics.evidence`). Each is sorted into a
cause by its words; the most frequent cause wins, and its hint says what to check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

CAUSES = ("authentication", "timeout", "unreachable", "protocol")
"""In order of precedence: for one piece of evidence, and between causes seen equally often."""

_WORDS = {
    "authentication": ("http 401", "http 403", "authenticat", "authoriz", "credential",
                       "refused by server", "rejected by server", "protocolrefused",
                       "unauthorized", "forbidden", "login"),
    "timeout": ("timed out", "timeout", "no answer within", "not completed within"),
    "unreachable": ("connection refused", "connectionrefusederror", "unreachable",
                    "name or service not known", "no route to host"),
    "protocol": ("http ", "bad status", "handshake status", "engine.io", "socket.io",
                 "unexpected", "not a", "invalid", "malformed", "decode", "valueerror",
                 "protocol"),
}


def classify(evidence: str) -> str | None:
    """The cause one piece of evidence points to, or None."""
    lowered = evidence.lower()
    for cause in CAUSES:
        if any(word in lowered for word in _WORDS[cause]):
            return cause
    return None


def likely_cause(evidence: Mapping[str, int]) -> str | None:
    """The cause most of the evidence points to (None without evidence)."""
    votes: Counter[str] = Counter()
    for item, count in evidence.items():
        cause = classify(item)
        if cause is not None:
            votes[cause] += count
    if not votes:
        return None
    best = max(votes.values())
    return next(cause for cause in CAUSES if votes[cause] == best)


def no_connect_hint(evidence: Mapping[str, int], protocol: str, connect_timeout: float) -> str:
    """What to check when no session ever connected, from what the handshakes said."""
    cause = likely_cause(evidence)
    websocket_hint = ("is --protocol websocket right for this server? (it needs a WebSocket "
                      "endpoint URL, e.g. ws://HOST:PORT/ws/echo)")
    if cause == "authentication" and protocol == "websocket" and not any(
            "401" in item for item in evidence):
        # Web frameworks answer a WebSocket upgrade on a path they do not route
        # with 403 too (Starlette, uvicorn): a wrong URL looks like a refusal.
        return ("authentication or protocol: the server refused the WebSocket upgrade "
                f"(HTTP 403): check the credentials, or {websocket_hint}")
    if cause == "authentication":
        return ("authentication: the server refused the sessions (give --login USER:PASSWORD, "
                "or check --jwt-secret against the app's CHAINLIT_AUTH_SECRET)")
    if cause == "timeout":
        return (f"timeout: no handshake finished within {connect_timeout:g}s; the server is "
                "slow or is not the chat server (check --target, or raise --connect-timeout)")
    if cause == "unreachable":
        return "unreachable: the server stopped answering (is it still running? check --target)"
    if protocol == "websocket":
        return f"protocol: the server did not accept a WebSocket there; {websocket_hint}"
    return (f"protocol: the server did not answer as Socket.IO; is --protocol {protocol} "
            "right for this server? (chainlit and socketio need the server's base URL, e.g. "
            "http://HOST:PORT)")
