"""Client CPU per 1,000 chat turns, and turns per second, on Locust's engine and off it.

    pip install -e '.[locust,bench]'
    python benchmarks/locust_cpu.py --sessions 200 --duration 30 --target-cpus 0 --client-cpus 1-3

Runs the same Chainlit scenario (chat turns ``--think-time`` apart, a Resume
every ``--resume-every`` seconds) against one ``supervisor target`` process,
with each client in turn:

- ``p1-threads``, ``p1-gevent``: ``supervisor loadtest --processes 1`` (one
  process; threads, or gevent);
- ``p2``: ``supervisor loadtest --processes 2`` (a Locust master, 2 workers);
- ``sio``: a plain Locust user on python-socketio's client
  (``locust_sio_user.py``), one process.

The CPU figure is user + system seconds of the client command and every
process it started and waited for (``RUSAGE_CHILDREN`` around it), so it
counts the Locust master too; the target is a separate, still-running process
and is not counted. Pin the target to its own core (``--target-cpus``) so it
is not the bottleneck. Prints a Markdown table (medians over ``--repeat``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS = ("p1-threads", "p1-gevent", "p2", "sio")


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *command]
    return command


def start_target(cpus: str | None, log: Path) -> tuple[subprocess.Popen[str], str]:
    command = pinned(cpus, [sys.executable, "-m", "supervisor", "target", "--port", "0",
                            "--log-level", "warning", "--reply-tokens", "5"])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the target announces its URL, or exits (EOF)
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"the target did not start: {line!r} (see {log})")
    return proc, line.rsplit(" ", 1)[1].strip()


def command_for(variant: str, args: argparse.Namespace, url: str, out: Path) -> list[str]:
    if variant == "sio":
        return [sys.executable, "-m", "locust", "-f", str(HERE / "locust_sio_user.py"),
                "--headless", "--users", str(args.sessions), "--spawn-rate",
                str(args.spawn_rate), "--run-time", f"{args.duration}s", "--host", url,
                "--json-file", str(out.with_suffix("")), "--only-summary", "--skip-log-setup"]
    processes, runtime = {"p1-threads": ("1", "threads"), "p1-gevent": ("1", "gevent"),
                          "p2": ("2", "gevent")}[variant]
    return [sys.executable, "-m", "supervisor", "loadtest", "--target", url, "--processes",
            processes, "--runtime", runtime, "--sessions", str(args.sessions), "--spawn-rate",
            str(args.spawn_rate), "--duration", str(args.duration), "--think-time",
            str(args.think_time), "--resume-every", str(args.resume_every), "--quiet",
            "--json", str(out)]


def turns_of(variant: str, out: Path) -> tuple[int, int]:
    """Completed and failed turns, from our report or from Locust's JSON statistics."""
    data: Any = json.loads(out.read_text())
    if variant == "sio":
        turn = next((row for row in data if row["name"] == "turn"), None)
        if turn is None:
            return 0, 0
        return turn["num_requests"] - turn["num_failures"], turn["num_failures"]
    return data["counts"]["turns"], data["counts"]["turns_failed"]


def measure(variant: str, args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    out = folder / f"{variant}-{time.monotonic_ns()}.json"
    env = {**os.environ, "BENCH_THINK_TIME": str(args.think_time),
           "BENCH_RESUME_EVERY": str(args.resume_every)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with (folder / f"{variant}.log").open("a") as log:
        status = subprocess.run(pinned(args.client_cpus, command_for(variant, args, url, out)),
                                env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
                                timeout=args.duration + 180).returncode
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    turns, failed = turns_of(variant, out) if out.exists() else (0, 0)
    return {"variant": variant, "status": status, "cpu_s": cpu, "wall_s": wall,
            "turns": turns, "turns_failed": failed,
            "turns_per_s": turns / args.duration,
            "cpu_s_per_1000_turns": cpu / turns * 1000 if turns else None}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| client | turns | failed | turns/s | client CPU s | CPU s / 1,000 turns |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        per = row["cpu_s_per_1000_turns"]
        lines.append(f"| {row['variant']} | {row['turns']} | {row['turns_failed']} | "
                     f"{row['turns_per_s']:.1f} | {row['cpu_s']:.2f} | "
                     f"{'-' if per is None else f'{per:.2f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--spawn-rate", type=float, default=50.0)
    parser.add_argument("--duration", type=int, default=30, help="seconds (whole)")
    parser.add_argument("--think-time", type=float, default=1.0)
    parser.add_argument("--resume-every", type=float, default=5.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--target-cpus", help="taskset CPU list for the target, e.g. 0")
    parser.add_argument("--client-cpus", help="taskset CPU list for the clients, e.g. 1-3")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    folder = Path(tempfile.mkdtemp(prefix="locust-cpu-"))
    target, url = start_target(args.target_cpus, folder / "target.log")
    runs: list[dict[str, Any]] = []
    try:
        for round_number in range(args.repeat):  # interleaved: noise hits every variant alike
            for variant in variants:
                print(f"round {round_number + 1}: {variant}", file=sys.stderr, flush=True)
                runs.append(measure(variant, args, url, folder))
    finally:
        target.terminate()
        target.wait(10)
    rows = []
    for variant in variants:
        mine = [run for run in runs if run["variant"] == variant]
        per = [run["cpu_s_per_1000_turns"] for run in mine
               if run["cpu_s_per_1000_turns"] is not None]
        rows.append({"variant": variant, "turns": int(statistics.median(r["turns"] for r in mine)),
                     "turns_failed": int(statistics.median(r["turns_failed"] for r in mine)),
                     "turns_per_s": statistics.median(r["turns_per_s"] for r in mine),
                     "cpu_s": statistics.median(r["cpu_s"] for r in mine),
                     "cpu_s_per_1000_turns": statistics.median(per) if per else None})
    print(table(rows))
    print(f"\nlogs: {folder}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "runs": runs},
                                              indent=2))


if __name__ == "__main__":
    main()
