"""What sessions say: prompts from ``--messages FILE``, and a user's own scenario hook.

``--messages FILE`` takes either

- text (any name not ending in ``.jsonl``, ``.ndjson`` or ``.json``): one prompt
  a line, blank lines skipped; each prompt is a one-turn conversation; or
- JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one conversation a line,
  either a string (one turn) or a list of strings (several turns, in order).

Each session draws a conversation with its own random source (seeded from
``--seed``, so a run is reproducible), plays its turns in order, then draws the
next one. ``--scenario MODULE:FUNCTION`` (or ``path/to/file.py:FUNCTION``)
names a function called for each of a session's turns with a
:class:`~supervisor.loadtest.scenario.ScenarioSession` instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.loadtest.values import ConfigError

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_CONVERSATIONS = 1_000_000
MAX_TURNS = 1000
"""Turns one conversation may hold."""
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
FORMAT_FIX = ("text: one prompt a line; JSON lines (.jsonl): a string or a list of strings "
              "a line, e.g. [\"hi\", \"and then?\"]")

Conversation = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Conversations:
    """The conversations sessions draw from (never empty)."""

    items: tuple[Conversation, ...]
    source: str
    """The file they came from, or ``--message``."""

    def draw(self, rng: random.Random) -> Conversation:
        """One conversation, drawn with the session's own random source."""
        return self.items[rng.randrange(len(self.items))] if len(self.items) > 1 else (
            self.items[0])


def _json_line(line: str, where: str) -> Conversation:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not JSON: {exc.msg}", FORMAT_FIX) from None
    turns = [value] if isinstance(value, str) else value
    if (not isinstance(turns, list) or not turns or len(turns) > MAX_TURNS
            or not all(isinstance(turn, str) and turn for turn in turns)):
        raise ConfigError(f"{where} must be a non-empty string or a list of 1 to {MAX_TURNS} "
                          "non-empty strings", FORMAT_FIX)
    return tuple(turns)


def load_conversations(path: str, source: str = "--messages") -> Conversations:
    """Read ``path``; ConfigError naming the file and line of the first problem."""
    file = Path(path).expanduser()
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{source}: {path} is larger than {MAX_FILE_BYTES >> 20} MiB",
                              "use a smaller file")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror or exc}",
                          "check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: {path} is not UTF-8 text", FORMAT_FIX) from None
    as_json = file.suffix.lower() in JSON_SUFFIXES
    items: list[Conversation] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(items) >= MAX_CONVERSATIONS:
            raise ConfigError(f"{source}: {path} has more than {MAX_CONVERSATIONS} lines",
                              "use a smaller file")
        where = f"{source}: {path} line {number}"
        items.append(_json_line(line, where) if as_json else (line.strip(),))
    if not items:
        raise ConfigError(f"{source}: {path} has no prompts", FORMAT_FIX)
    return Conversations(tuple(items), str(file))


ScenarioFunction = Callable[[Any], None]


def load_scenario(spec: str, source: str = "--scenario") -> ScenarioFunction:
    """``MODULE:FUNCTION`` or ``FILE.py:FUNCTION`` as a callable; ConfigError when it is not."""
    fix = "give MODULE:FUNCTION or path/to/file.py:FUNCTION, e.g. my_load.py:scenario"
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ConfigError(f"{source} {spec!r} is not MODULE:FUNCTION", fix)
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser()
            if not path.is_file():
                raise ConfigError(f"{source}: no file {where}", fix)
            module_name = f"supervisor_loadtest_scenario_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ConfigError(f"{source}: cannot load {where}", fix)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any error in the user's module is reported
        raise ConfigError(f"{source}: importing {where} failed: {type(exc).__name__}: {exc}",
                          fix) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{source}: {where} has no function {name!r}", fix)
    return function  # type: ignore[no-any-return]
