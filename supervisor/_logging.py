"""The library's structlog loggers (internal).

The library never configures logging. Its loggers wrap stdlib loggers under
``supervisor.*`` (which get a ``NullHandler``, as pykka does) with a processor
chain of their own, so secrets are redacted before an event leaves the library,
whatever the application's structlog or logging setup is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

logging.getLogger("supervisor").addHandler(logging.NullHandler())

REDACTED = "[redacted]"
SECRET_NAME = re.compile(
    r"auth|cookie|token|passw|secret|credential|signature|api[-_]?key|private[-_]?key"
    r"|(?:^|[-_])(?:key|sig|jwt|sid)(?:$|[-_])",
    re.IGNORECASE)
"""Names (log keys, header names, URL query parameters) whose values are secrets.

By pattern, not by list: ``X-Api-Key``, ``access_token``, ``Proxy-Authorization``,
``X-Auth-Token``, ``client_secret`` and ``Set-Cookie`` all match.
"""
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")


def _is_secret(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def redact_text(text: str) -> str:
    """``text`` with the values of secret-named URL query parameters redacted."""
    if "=" not in text:
        return text
    return _QUERY_PARAM.sub(
        lambda m: f"{m[1]}{m[2]}={REDACTED}" if _is_secret(m[2]) else m[0], text)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: REDACTED if isinstance(key, str) and _is_secret(key) else _redact(item)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        # Header lists are (name, value) pairs: redact by the name.
        if len(value) == 2 and isinstance(value[0], str) and _is_secret(value[0]):
            return (value[0], REDACTED)
        return type(value)(_redact(item) for item in value)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, BaseException):
        return redact_text(repr(value))
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: hide credentials by name: keys, header pairs, URL query values."""
    for key, value in list(event_dict.items()):
        if key == "event":
            continue
        event_dict[key] = REDACTED if _is_secret(key) else _redact(value)
    return event_dict


LEVELS = {name.lower(): number for name, number in logging.getLevelNamesMapping().items()}
"""stdlib level numbers by the names structlog's methods have (``"info"``: 20)."""


def enabled(log: Any, level: str) -> bool:
    """Whether ``log`` (from :func:`get_logger`) would emit at ``level``: a check that costs
    one cached stdlib lookup, where a dropped call still builds its event first."""
    return bool(log.isEnabledFor(LEVELS[level]))


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
