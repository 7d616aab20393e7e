"""Which runtime this process runs: threads, or gevent's greenlets (internal)."""

from __future__ import annotations

import sys


def gevent_patched() -> bool:
    """True once ``gevent.monkey.patch_all()`` has run in this process.

    Read when a piece of the runtime starts (the loop, a worker, the pool), by
    which time a gevent process is patched: ``supervisor loadtest`` patches
    first, and so must a program that uses gevent (docs/services.md).
    """
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))
