"""The library's structlog loggers (internal).

The library never configures logging. Its loggers wrap stdlib loggers under
``supervisor.*`` (which get a ``NullHandler``, as pykka does) with a processor
chain of their own, so secrets are redacted before an event leaves the library,
whatever the application's structlog or logging setup is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

logging.getLogger("supervisor").addHandler(logging.NullHandler())

REDACTED = "[redacted]"
_SECRET_WORDS = ("cookie", "token", "authorization", "password", "secret", "credential")


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: REDACTED if isinstance(key, str) and _is_secret(key) else _redact(item)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        # Header lists are (name, value) pairs: redact by the name.
        if len(value) == 2 and isinstance(value[0], str) and _is_secret(value[0]):
            return (value[0], REDACTED)
        return type(value)(_redact(item) for item in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: hide cookies, tokens, passwords and Authorization values."""
    for key, value in list(event_dict.items()):
        if key == "event":
            continue
        event_dict[key] = REDACTED if _is_secret(key) else _redact(value)
    return event_dict


def get_logger(name: str) -> Any:
    """A structlog logger for library module ``name``, redacting, never configured here."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            redact_secrets,
            structlog.stdlib.render_to_log_kwargs,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
