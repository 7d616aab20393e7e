"""Cycle-collector settings for this package's own long-running processes (internal).

CPython's cycle collector runs a young collection every 700 net allocations of
container objects and, every 100 of those, may run a full one that visits
every container in the process. A process holding thousands of sessions does
both a lot: each frame allocates a few short-lived containers, and the
sessions keep hundreds of thousands of long-lived ones, which every full
collection walks again (0.2-0.35 s at 5,000 sessions, during which no session
reads). Measured at 1,000 chat sessions (docs/benchmarks.md, "The cycle
collector"), ``supervisor loadtest`` spent 1.8 s of its 19 s of CPU in the
collector and the embedded target 9.4 s of its 28 s.

Only the commands apply these settings (``supervisor loadtest`` and
``supervisor target``), once start-up is over: the collector belongs to the
application, so the library never changes it in a process that imports it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net container allocations between young collections (CPython's default: 700).

Most containers a frame makes die by reference counting within that many, so
a young collection visits few survivors, and full collections come about 14
times less often. The price: young cyclic garbage waits for 10,000 container
allocations instead of 700 (an ended connection makes none: it is freed by
reference counting, ``tests/test_reference_cycles.py``)."""


def settle() -> None:
    """Freeze what start-up made and use ``YOUNG_THRESHOLD``; call once, after start-up.

    ``gc.freeze`` moves every object alive now (modules, classes, functions,
    the parsed configuration) out of the collector's sight: they live as long
    as the process, so no full collection need visit them again. The
    collection before it leaves no garbage to be frozen with them.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
