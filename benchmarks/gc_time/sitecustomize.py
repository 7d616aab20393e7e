"""Time in CPython's cycle collector, per generation, of every Python process started
with this folder on ``PYTHONPATH`` and ``GC_TIME_OUT`` set (a path).

    PYTHONPATH=benchmarks/gc_time GC_TIME_OUT=gc.jsonl python -m supervisor loadtest ...

Python imports ``sitecustomize`` at start-up, so the load-test client and the
target it starts (or any other process) each append one JSON line to
``GC_TIME_OUT`` as they exit normally: the command line, collections, seconds
and objects collected per generation (``gc.callbacks``), and the process's CPU
seconds. Without ``GC_TIME_OUT`` it does nothing.
"""

import atexit
import gc
import json
import os
import sys
import time

_OUT = os.environ.get("GC_TIME_OUT")
_started = [0.0]
_collections = [0, 0, 0]
_seconds = [0.0, 0.0, 0.0]
_collected = [0, 0, 0]


def _on_collection(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    generation = info["generation"]
    _collections[generation] += 1
    _seconds[generation] += time.perf_counter() - _started[0]
    _collected[generation] += info["collected"]


def _write() -> None:
    line = {"argv": sys.argv[:4], "collections": _collections,
            "seconds": [round(value, 3) for value in _seconds], "collected": _collected,
            "cpu_seconds": round(time.process_time(), 1)}
    with open(_OUT, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


if _OUT:
    gc.callbacks.append(_on_collection)
    atexit.register(_write)
