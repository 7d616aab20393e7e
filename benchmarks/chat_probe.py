"""What ``bench_chat.py`` reads from ``/proc`` while a client runs (Linux only).

- connections: ESTABLISHED TCP sockets whose *local* port is the target's, from
  ``/proc/net/tcp`` and ``/proc/net/tcp6``: the target's accepted connections
  as the kernel sees them, counted the same way whatever the client is;
- memory: the resident set of the client and every process under it (Artillery
  starts workers), from ``/proc/PID/status`` ``VmRSS``;
- the server's CPU time, from ``/proc/PID/stat``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_ESTABLISHED = "01"
_PROC = Path("/proc")


def established_to(port: int) -> int:
    """How many ESTABLISHED TCP sockets have ``port`` as their local port."""
    wanted = f"{port:04X}"
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split(None, 4)
            if len(fields) >= 4 and fields[3] == _ESTABLISHED and (
                    fields[1].rsplit(":", 1)[-1] == wanted):
                count += 1
    return count


_PPID, _UTIME, _STIME = 1, 11, 12
"""Indexes in :func:`_stat_fields`: proc(5)'s fields 4, 14 and 15."""


def _stat_fields(pid: int | str) -> list[str]:
    """``/proc/PID/stat`` after "pid (comm)", from the state on (raises OSError once gone).

    comm may hold spaces and parentheses, so the split is at its last ")".
    """
    return Path(_PROC, str(pid), "stat").read_text().rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(_stat_fields(entry.name)[_PPID])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(_PROC, str(pid), "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(root: int) -> int:
    """Resident KiB of ``root`` and all its descendants (0 for the ones already gone)."""
    tree = _children()
    total, todo, seen = 0, [root], set()
    while todo:  # bounded: each pid is visited once
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kib(pid)
        todo.extend(tree.get(pid, ()))
    return total


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used so far (None once it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = _stat_fields(pid)
        return (int(fields[_UTIME]) + int(fields[_STIME])) / os.sysconf("SC_CLK_TCK")
    return None
