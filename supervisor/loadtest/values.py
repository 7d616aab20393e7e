"""Converters for load-test option values, with errors that say how to fix them.

Each converter takes the raw value (a string from the command line or the
environment, or a TOML value) and ``source``, the place it came from
(``--sessions``, ``SUPERVISOR_SESSIONS``, ``sessions in load.toml``), and
returns the typed value or raises :class:`ConfigError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

URL_SCHEMES = ("http", "https", "ws", "wss")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A bad option value: ``what`` is wrong, ``fix`` says what to do."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what} ({fix})")
        self.what = what
        self.fix = fix


@dataclass(frozen=True, slots=True)
class Login:
    """``--login USER:PASSWORD``; ``{n}`` in either part becomes the session number."""

    user: str
    password: str | None

    def for_session(self, number: int) -> tuple[str, str | None]:
        """The user and password of session ``number`` (1-based)."""
        user = self.user.replace("{n}", str(number))
        password = None if self.password is None else self.password.replace("{n}", str(number))
        return user, password

    def redacted(self) -> str:
        return self.user if self.password is None else f"{self.user}:[redacted]"


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else repr(str(value))


def text(value: Any, source: str) -> str:
    """A non-empty string."""
    if isinstance(value, bool | list | dict) or value is None:
        raise ConfigError(f"{source} must be a string, got {_shown(value)}",
                          "give a text value")
    result = str(value)
    if not result:
        raise ConfigError(f"{source} must not be empty", "give a value or leave the option out")
    return result


def parse_bool(value: Any, source: str) -> bool:
    """``True``/``False``, or 1/0, true/false, yes/no, on/off in any case."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{source} must be true or false, got {_shown(value)}",
                      "use true/false, yes/no, on/off or 1/0")


def integer(value: Any, source: str) -> int:
    """Any whole number."""
    if isinstance(value, bool):
        raise ConfigError(f"{source} must be a whole number, got {value!r}", "e.g. 42")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{source} must be a whole number, got {_shown(value)}",
                          "e.g. 42") from None


def _number(value: Any, source: str, *, whole: bool) -> float:
    if whole:
        return integer(value, source)
    if isinstance(value, bool):
        raise ConfigError(f"{source} must be a number, got {value!r}", "e.g. 2.5")
    try:
        result = float(value if isinstance(value, int | float) else str(value).strip())
    except ValueError:
        raise ConfigError(f"{source} must be a number, got {_shown(value)}", "e.g. 2.5") from None
    if not math.isfinite(result):
        raise ConfigError(f"{source} must be a finite number, got {_shown(value)}", "e.g. 2.5")
    return result


def at_least(minimum: float, *, strict: bool = False,
             integer: bool = False) -> Callable[[Any, str], Any]:
    """A converter for numbers ``>= minimum`` (``> minimum`` when ``strict``)."""
    kind = "a whole number" if integer else "a number"
    bound = f"above {minimum:g}" if strict else f"of {minimum:g} or more"
    example = f"{max(10, minimum * 10):g}" if integer else f"{max(2.5, minimum * 2):g}"

    def convert(value: Any, source: str) -> Any:
        result = _number(value, source, whole=integer)
        if result < minimum or (strict and result == minimum):
            shown = value if isinstance(value, str) else str(value)
            raise ConfigError(f"{source} must be {kind} {bound}, got {shown!r}",
                              f"give {kind} {bound}, e.g. {example}")
        return int(result) if integer else result

    return convert


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_EXAMPLES = "e.g. 30, 30s, 500ms, 2m or 1h30m"


def parse_duration(value: Any, source: str) -> float:
    """Seconds from a number (seconds) or units: ``500ms``, ``30s``, ``2m``, ``1h30m``."""
    if isinstance(value, bool):
        raise ConfigError(f"{source} must be a duration, got {value!r}", DURATION_EXAMPLES)
    if isinstance(value, int | float):
        result = float(value)
    else:
        raw = str(value).strip().lower()
        try:
            result = float(raw)
        except ValueError:
            parts = _DURATION_PART.findall(raw)
            if not raw or "".join(number + unit for number, unit in parts) != raw:
                raise ConfigError(f"{source} must be a duration, got {_shown(value)}",
                                  f"give seconds or units, {DURATION_EXAMPLES}") from None
            result = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if not math.isfinite(result):
        raise ConfigError(f"{source} must be a finite duration, got {_shown(value)}",
                          DURATION_EXAMPLES)
    return result


def duration(minimum: float = 0.0, *, strict: bool = False) -> Callable[[Any, str], float]:
    """A converter for durations ``>= minimum`` seconds (``> minimum`` when ``strict``)."""
    bound = f"above {minimum:g}s" if strict else f"of {minimum:g}s or more"

    def convert(value: Any, source: str) -> float:
        result = parse_duration(value, source)
        if result < minimum or (strict and result == minimum):
            raise ConfigError(f"{source} must be a duration {bound}, got {_shown(value)}",
                              f"give a duration {bound}, {DURATION_EXAMPLES}")
        return result

    return convert


def fraction(value: Any, source: str) -> float:
    """A number within [0, 1]."""
    result = _number(value, source, whole=False)
    if not 0.0 <= result <= 1.0:
        raise ConfigError(f"{source} must be within 0 and 1, got {_shown(value)}",
                          "give a fraction, e.g. 0.01 for 1%")
    return result


def choice(options: Sequence[str]) -> Callable[[Any, str], str]:
    """A converter for one of ``options``."""

    def convert(value: Any, source: str) -> str:
        result = str(value).strip().lower()
        if result not in options:
            raise ConfigError(f"{source} must be one of {', '.join(options)}, got {_shown(value)}",
                              f"pick one of {', '.join(options)}")
        return result

    return convert


def check_target_url(value: str, source: str) -> str:
    """An absolute http(s)/ws(s) URL with a host (and a valid port, if any)."""
    fix = "give a URL like http://127.0.0.1:8000 or ws://127.0.0.1:8000/ws/echo"
    try:
        parts = urlsplit(value.strip())
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket: 'http://[::1'
        raise ConfigError(f"{source} is not a valid URL ({exc}): {value!r}", fix) from None
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        raise ConfigError(f"{source} must be an http, https, ws or wss URL with a host, "
                          f"got {value!r}", fix)
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
    except ValueError:
        raise ConfigError(f"{source} has an invalid port: {value!r}", fix) from None
    if any(ord(char) < 33 or ord(char) == 127 for char in value.strip()):
        raise ConfigError(f"{source} contains spaces or control characters: {value!r}", fix)
    return value.strip()


def parse_login(value: str, source: str) -> Login:
    """``USER:PASSWORD`` (or ``USER`` alone, for minted tokens)."""
    user, sep, password = value.partition(":")
    if not user:
        raise ConfigError(f"{source} must be USER:PASSWORD, got no USER before the colon",
                          "e.g. --login 'alice:alice-pw' or --login 'user{n}:pw{n}'")
    return Login(user, password if sep else None)


def report_path(value: str, source: str) -> str:
    """A file path whose directory exists (checked now, not after a long run)."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise ConfigError(f"{source}: {value} is a directory", "give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{source}: directory {parent} does not exist",
                          "create it first or pick another path")
    return str(path)
