"""``supervisor target`` as the load test's child: it exits when its parent goes.

Run as ``python -m supervisor.loadtest.embedded [supervisor target options]``.
The parent holds the write end of this process's stdin; when that closes (the
parent stopped it, or died), the watchdog sends this process SIGTERM, on which
the target shuts down gracefully.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from supervisor.target.command import main as target_main


def _exit_with_parent() -> None:
    # read() returns only at end of file: the parent closed the pipe or died.
    sys.stdin.buffer.read()
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    threading.Thread(target=_exit_with_parent, daemon=True, name="parent-watchdog").start()
    return target_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
