"""Top functions by self time, and the share of each package, from a py-spy raw profile.

    py-spy record --format raw --nolineno -r 100 -o profile.raw -- python ...
    python benchmarks/profile_top.py profile.raw --top 10

``--format raw`` writes one line per distinct stack, ``frame;frame;...;leaf
COUNT``, each frame ``function (file)``; with ``--threads`` the first frame is
``thread (ID)``, and ``--thread main`` keeps the process's main OS thread only
(the lowest id: its id is the process id). Under gevent that is where every
greenlet runs; the other threads are gevent's thread pool, mostly blocked in
a lock that py-spy does not recognise as idle. A sample's *self* time belongs to its
leaf frame; this adds the counts up per leaf function (function and file, so
``recv`` of gevent and of websocket-client stay apart) and per package (the
first path component after ``site-packages/``, ``supervisor`` for ours,
``stdlib`` for the rest). py-spy leaves idle samples out unless told
``--idle``, so the percentages are of the time the process was on a CPU.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")
_THREAD = re.compile(r"^thread \((?P<id>\w+)\)$")


def leaf_of(stack: str) -> tuple[str, str]:
    """The leaf frame of one raw stack as (function, file)."""
    leaf = stack.rsplit(";", 1)[-1]
    if _THREAD.match(leaf):
        return "(no Python frame: native code)", ""
    match = _FRAME.match(leaf)
    if match is None:
        return leaf, ""
    return match["function"], match["file"]


def package_of(file: str) -> str:
    """Which package a frame's file belongs to (see the module docstring)."""
    rest = file.split("site-packages/", 1)[-1]  # py-spy usually shortens it already
    if not rest:
        return "native code"
    if rest.startswith("<string>"):
        return "generated code (dataclass __init__ and the like)"
    top = rest.split("/", 1)[0].removesuffix(".py")
    if rest.startswith("<frozen") or "/" not in rest or top in sys.stdlib_module_names:
        return "stdlib"
    return top


def short_file(file: str) -> str:
    """The file as shown: relative to site-packages when it is a dependency."""
    return file.split("site-packages/", 1)[-1]


def thread_of(stack: str) -> str | None:
    """The thread id a ``--threads`` stack starts with, or None."""
    match = _THREAD.match(stack.split(";", 1)[0])
    return match["id"] if match else None


def _thread_key(thread: str) -> int:
    return int(thread, 16) if thread.startswith("0x") else int(thread)


def parse(path: Path, thread: str | None = None) -> tuple[Counter[tuple[str, str]], int]:
    """Self samples per leaf (function, file), and the total samples, of ``thread``
    (an id, ``main``, or None for every thread)."""
    stacks: list[tuple[str, int]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack, int(count)))
    if thread == "main":
        ids = {found for stack, _ in stacks if (found := thread_of(stack)) is not None}
        if not ids:
            raise SystemExit(f"{path}: no thread ids (record with py-spy --threads)")
        thread = min(ids, key=_thread_key)
    leaves: Counter[tuple[str, str]] = Counter()
    total = 0
    for stack, count in stacks:
        if thread is not None and thread_of(stack) != thread:
            continue
        leaves[leaf_of(stack)] += count
        total += count
    return leaves, total


def tables(leaves: Counter[tuple[str, str]], total: int, top: int) -> str:
    """The top-``top`` leaf functions and the per-package shares, as Markdown."""
    lines = [f"{total} samples on CPU", "", "| # | function | file | self % |",
             "|---:|---|---|---:|"]
    for rank, ((function, file), count) in enumerate(leaves.most_common(top), start=1):
        lines.append(f"| {rank} | `{function}` | {short_file(file)} | "
                     f"{100 * count / total:.1f} |")
    packages: Counter[str] = Counter()
    for (_, file), count in leaves.items():
        packages[package_of(file)] += count
    lines += ["", "| package | self % |", "|---|---:|"]
    lines += [f"| {name} | {100 * count / total:.1f} |" for name, count in packages.most_common()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--thread", help="one thread: its id, or main (needs py-spy --threads)")
    args = parser.parse_args()
    leaves, total = parse(args.raw, args.thread)
    if not total:
        raise SystemExit(f"{args.raw}: no samples")
    print(tables(leaves, total, args.top))


if __name__ == "__main__":
    main()
