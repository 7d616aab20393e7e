"""Run a command on the given CPUs with the open-files limit raised: ``pinned.py 0,1 -- cmd ...``.

``os.sched_setaffinity`` on this process, then ``exec``: the command and every
process it starts keep the affinity. Used by ``bench_chat.py`` to put the
target and the client under test on cores of their own.
"""

from __future__ import annotations

import os
import sys

from fd_limit import raise_fd_limit


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: pinned.py CPU[,CPU...] -- COMMAND [ARG...]")
    cpus = {int(cpu) for cpu in argv[0].split(",") if cpu.strip()}
    os.sched_setaffinity(0, cpus)
    raise_fd_limit()
    os.execvp(argv[2], argv[2:])  # noqa: S606 - the benchmark's own commands


if __name__ == "__main__":
    main(sys.argv[1:])
