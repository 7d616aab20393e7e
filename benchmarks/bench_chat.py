"""The chat-scenario benchmark: client cost per turn and per session, ours against the peers.

    pip install -e '.[bench]'
    python benchmarks/bench_chat.py --sizes 100,1000 --rounds 3 --json /tmp/chat.json

The scenario (issue 13): N chat sessions started over ``--ramp`` seconds, a
turn every ``--think-time`` seconds, a thread switch every
``--resume-every`` seconds between two threads, ``--duration`` seconds in all,
against the embedded load-test target (``supervisor target``, Chainlit over
Socket.IO, 5 streamed tokens per reply), or with ``--server echo`` against
``echo_server.py`` (a plain WebSocket echo, a turn being one frame and its
echo: a server that keeps up with 10,000 sessions, for ours only). Each run
(one candidate, one N) gets a fresh server process pinned to one core and a
fresh client process pinned to the other (``os.sched_setaffinity``);
candidates are interleaved round by round, so a noisy neighbour slows them
alike.

Per run: client CPU seconds (user + system from the client's ``wait4``
rusage, so every process it started and waited for counts: Artillery's
workers) per 1,000 completed turns; peak RSS of the client's process tree
(sampled every ``SAMPLE_S``), per session held ((peak - baseline) / the
sessions held at once, the baseline being the last sample before the target
saw the first connection, dropped when that sample is over
``BASELINE_MAX_AGE_S`` old) and per added session held (between two sizes,
free of start-up); peak connected (the target's ESTABLISHED sockets, from
``/proc/net``; capped at N, it is the sessions held at once: a client that
holds fewer than N is not charged for the rest); failed sessions, turns and
first-token p50/p99 from the candidate's own report. A client still running at
its deadline (duration + ``--grace``) is killed and reported as such, its
Python stacks first written to the log directory (``py-spy dump``, if
installed). Handshakes per 1,000 turns (connects, from the candidate's own
report) show the clients played the same scenario: the peers time their turns
and thread switches as ours does (see ``sio_async_chat.py``; Artillery's flow
also thinks after a switch).
The server's CPU seconds per 1,000 turns (``/proc/PID/stat``, from its start to
the client's exit) show whether a client makes it work more for each turn.
Prints a Markdown table of medians with the min-max over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from chat_candidates import CANDIDATES, Candidate, Scenario, Unavailable
from chat_probe import cpu_seconds, established_to, tree_rss_kib

HERE = Path(__file__).resolve().parent
ANNOUNCEMENT = "supervisor target listening on "
TARGET_START_S = 60.0
SAMPLE_S = 0.5
BASELINE_MAX_AGE_S = 2.0
DUMP_TIMEOUT_S = 20.0
HUNG = "hung at exit"
"""A client that reported its run, then did not exit by its deadline (killed)."""
USABLE = ("ok", HUNG)
REPLY_TOKENS = "5"


@dataclass
class Run:
    """One candidate at one size in one round."""

    candidate: str
    sessions: int
    round: int
    status: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    turns: int = 0
    turns_failed: int = 0
    failed_sessions: int | None = None
    peak_connected: int = 0
    own_connected_peak: int | None = None
    handshakes: int | None = None
    rss_baseline_mib: float = 0.0
    rss_baseline_age_s: float | None = None
    """Seconds from the baseline sample to the first with a connection (None: not known)."""
    rss_peak_mib: float = 0.0
    first_token_p50_ms: float | None = None
    first_token_p99_ms: float | None = None
    target_cpu_s: float | None = None
    """The server's CPU seconds from its start to the client's exit (None: not read)."""

    @property
    def cpu_per_1000_turns(self) -> float | None:
        return self.cpu_s / self.turns * 1000 if self.turns else None

    @property
    def handshakes_per_1000_turns(self) -> float | None:
        """Connects per turn: the same scenario makes the same count for every client."""
        if self.handshakes is None or not self.turns:
            return None
        return self.handshakes / self.turns * 1000

    @property
    def target_cpu_per_1000_turns(self) -> float | None:
        """What each completed turn cost the server: tells a client that makes the server
        work more per turn (more frames, extra round trips) from one that does not."""
        if self.target_cpu_s is None or not self.turns:
            return None
        return self.target_cpu_s / self.turns * 1000

    @property
    def held(self) -> int:
        """Sessions held at once: peak connected, capped at N (a reconnect overlaps)."""
        return min(self.sessions, self.peak_connected)

    @property
    def rss_kib_per_session(self) -> float | None:
        """(peak - baseline) / sessions held; None when the baseline sample is too old to
        trust (the runner was starved and missed the client's start-up) or none was held.

        Per session *held*, not per N: a client that keeps only half its sessions
        connected holds memory for half (the issue's "per live session")."""
        if self.rss_baseline_age_s is not None and self.rss_baseline_age_s > BASELINE_MAX_AGE_S:
            return None
        if not self.held:
            return None
        return (self.rss_peak_mib - self.rss_baseline_mib) * 1024 / self.held


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    if cpus is None:
        return command
    return [sys.executable, str(HERE / "pinned.py"), cpus, "--", *command]


SERVERS = {"target": "chainlit", "echo": "websocket"}
"""``--server``: what each speaks (``Scenario.protocol``)."""


class Target:
    """The server in its own process (and its own process group): ``supervisor target``,
    or with ``echo`` the WebSocket echo server of ``echo_server.py``."""

    def __init__(self, cpus: str | None, log: IO[bytes], server: str = "target") -> None:
        if server == "echo":  # it prints "PORT <n>" once listening
            command = [sys.executable, str(HERE / "echo_server.py"), "--port", "0"]
        else:
            command = [sys.executable, "-m", "supervisor", "target", "--port", "0",
                       "--log-level", "warning", "--reply-tokens", REPLY_TOKENS]
        self.proc = subprocess.Popen(pinned(cpus, command), stdout=subprocess.PIPE, stderr=log,
                                     start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        try:
            line = lines.get(timeout=TARGET_START_S) or ""
        except queue.Empty:
            line = ""
        if server == "echo" and line.startswith("PORT "):
            self.port = int(line.split()[1])
            self.url = f"ws://127.0.0.1:{self.port}/ws"
            return
        if not line.startswith(ANNOUNCEMENT):
            self.stop()
            raise RuntimeError(f"the {server} did not start in {TARGET_START_S:g}s: {line!r}")
        self.url = line[len(ANNOUNCEMENT):].strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def _drain(self, lines: queue.Queue[str | None]) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:  # keeps reading, so the pipe never fills
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def dump_stacks(pid: int, where: Path) -> None:
    """Write a hung client's Python stacks (py-spy, when installed) before it is killed."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return
    with where.open("wb") as out, contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run([spy, "dump", "--pid", str(pid)], stdout=out, stderr=subprocess.STDOUT,
                       timeout=DUMP_TIMEOUT_S, check=False)


def watch_client(proc: subprocess.Popen[bytes], port: int, deadline: float,
                 run: Run, stacks: Path | None = None) -> tuple[int | None, Any]:
    """Sample the client until it exits or its deadline passes (then kill it).

    Returns its exit status (None if killed) and its ``wait4`` rusage. A client
    killed at its deadline first has its stacks written to ``stacks``.
    """
    baseline: int | None = None
    baseline_at = time.monotonic()
    peak_rss = 0
    connected_seen = False
    while True:  # bounded by the deadline: every pass sleeps SAMPLE_S or returns
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        rss = tree_rss_kib(proc.pid)
        connected = established_to(port)
        run.peak_connected = max(run.peak_connected, connected)
        if connected and not connected_seen:
            connected_seen = True
            run.rss_baseline_age_s = time.monotonic() - baseline_at
            baseline = baseline if baseline is not None else rss
        elif not connected_seen:
            baseline, baseline_at = rss, time.monotonic()  # the last before any connection
        peak_rss = max(peak_rss, rss)
        if time.monotonic() >= deadline:
            if stacks is not None:
                dump_stacks(proc.pid, stacks)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            run.status = "killed at deadline"
            break
        time.sleep(SAMPLE_S)
    run.rss_baseline_mib = (baseline or 0) / 1024
    run.rss_peak_mib = peak_rss / 1024
    return (None if run.status == "killed at deadline" else proc.returncode), usage


def measure(candidate: Candidate, sessions: int, round_number: int,
            args: argparse.Namespace, folder: Path) -> Run:
    protocol = SERVERS[args.server]
    if protocol not in candidate.protocols:
        raise Unavailable(f"{candidate.label}: cannot play the scenario against the "
                          f"{args.server} server (it speaks {protocol})")
    run = Run(candidate.name, sessions, round_number, status="ok")
    stem = f"{candidate.name}-n{sessions}-r{round_number}"
    out = folder / f"{stem}.json"
    with (folder / f"{stem}.target.log").open("wb") as target_log, \
            (folder / f"{stem}.client.log").open("wb") as client_log:
        target = Target(args.target_cpu, target_log, args.server)
        try:
            scenario = Scenario(target.url, sessions, max(1.0, sessions / args.ramp),
                                args.duration, args.think_time, args.resume_every, protocol)
            command = pinned(args.client_cpu, candidate.command(scenario, out))
            started = time.monotonic()
            proc = subprocess.Popen(command, env=candidate.env(scenario, out), cwd=HERE,
                                    stdout=client_log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            exit_status, usage = watch_client(proc, target.port,
                                              started + args.duration + args.grace, run,
                                              folder / f"{stem}.stacks.txt")
            run.wall_s = time.monotonic() - started
            run.cpu_s = usage.ru_utime + usage.ru_stime
            run.target_cpu_s = cpu_seconds(target.proc.pid)
        finally:
            target.stop()
    if exit_status not in (None, 0, 1):  # ours and Locust exit 1 when a threshold fails
        run.status = f"exit {exit_status}"
    if not out.exists():
        run.status = run.status if run.status != "ok" else "no report"
        return run
    outcome = candidate.read(out)
    for key, value in asdict(outcome).items():
        if key != "own_cpu_s":
            setattr(run, key, value)
    if run.status == "killed at deadline" and outcome.own_cpu_s is not None:
        # It wrote its figures as the run ended, then never exited: count the CPU it
        # took up to then, by its own rusage, not the minutes it spent hanging.
        run.status, run.cpu_s = HUNG, outcome.own_cpu_s
    return run


def spread(values: list[float], fmt: str) -> str:
    """Median, and the min-max when the rounds differ."""
    if not values:
        return "-"
    middle = format(statistics.median(values), fmt)
    low, high = format(min(values), fmt), format(max(values), fmt)
    return middle if low == high else f"{middle} ({low}-{high})"


def _median_peak(runs: list[Run]) -> tuple[float, float] | None:
    """Median peak RSS (MiB) and median sessions held, of the runs that ended ok."""
    ok = [run for run in runs if run.status in USABLE]
    if not ok:
        return None
    return (statistics.median(run.rss_peak_mib for run in ok),
            statistics.median(run.held for run in ok))


def table(runs: list[Run], sizes: list[int], names: list[str]) -> str:
    """Markdown: per size and candidate, medians (min-max) of the rounds that ended ok.

    *RSS KiB / added session* compares the median peak RSS with the one at the
    next smaller size, per session held in addition: the memory each extra
    session costs, free of start-up.
    """
    lines = ["| N | candidate | rounds used | client CPU s / 1,000 turns | RSS peak MiB | "
             "RSS KiB / session held | RSS KiB / added session | peak connected | "
             "failed sessions | turns | handshakes / 1,000 turns | "
             "first token p50 / p99 ms | target CPU s / 1,000 turns |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ordered = sorted(sizes)
    for size in sizes:
        for name in names:
            mine = [run for run in runs if run.candidate == name and run.sessions == size]
            if not mine:
                continue
            ok = [run for run in mine if run.status in USABLE]
            per = [run.cpu_per_1000_turns for run in ok if run.cpu_per_1000_turns is not None]
            p50 = [run.first_token_p50_ms for run in ok if run.first_token_p50_ms is not None]
            p99 = [run.first_token_p99_ms for run in ok if run.first_token_p99_ms is not None]
            served = [run.target_cpu_per_1000_turns for run in ok
                      if run.target_cpu_per_1000_turns is not None]
            connects = [run.handshakes_per_1000_turns for run in ok
                        if run.handshakes_per_1000_turns is not None]
            failed = [float(run.failed_sessions) for run in ok if run.failed_sessions is not None]
            rss = [run.rss_kib_per_session for run in ok if run.rss_kib_per_session is not None]
            added = "-"
            smaller = [other for other in ordered if other < size]
            if smaller:
                below = [run for run in runs if run.candidate == name
                         and run.sessions == smaller[-1]]
                high, low = _median_peak(mine), _median_peak(below)
                if high is not None and low is not None and high[1] > low[1]:
                    added = f"{(high[0] - low[0]) * 1024 / (high[1] - low[1]):.0f}"
            problems = sorted({run.status for run in mine if run.status != "ok"})
            lines.append(
                f"| {size:,} | {CANDIDATES[name].label} | {len(ok)}/{len(mine)}"
                f"{' (' + ', '.join(problems) + ')' if problems else ''} | "
                f"{spread(per, '.2f')} | "
                f"{spread([run.rss_peak_mib for run in ok], '.0f')} | "
                f"{spread(rss, '.0f')} | {added} | "
                f"{spread([float(run.peak_connected) for run in ok], ',.0f')} | "
                f"{spread(failed, '.0f')} | "
                f"{spread([float(run.turns) for run in ok], ',.0f')} | "
                f"{spread(connects, ',.0f')} | "
                f"{spread(p50, ',.0f')} / {spread(p99, ',.0f')} | {spread(served, '.2f')} |")
    return "\n".join(lines)


def runs_from(paths: list[Path]) -> list[Run]:
    """The runs saved with ``--json`` (one file or several), for ``--from-json``."""
    known = {item.name for item in fields(Run)}
    return [Run(**{key: value for key, value in saved.items() if key in known})
            for path in paths for saved in json.loads(path.read_text())["runs"]]


def cpus_for(args: argparse.Namespace) -> None:
    """Default pinning: the target on the first allowed CPU, the client on the second."""
    allowed = sorted(os.sched_getaffinity(0))
    if args.target_cpu is None and args.client_cpu is None:
        if len(allowed) < 2:
            print("only one CPU: target and client are not pinned", file=sys.stderr)
            return
        args.target_cpu, args.client_cpu = str(allowed[0]), str(allowed[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="session counts, e.g. 100,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"from {','.join(CANDIDATES)}")
    parser.add_argument("--ramp", type=float, default=10.0,
                        help="seconds over which the sessions start (spawn rate N / ramp)")
    parser.add_argument("--think-time", type=float, default=1.0)
    parser.add_argument("--resume-every", type=float, default=5.0)
    parser.add_argument("--server", choices=SERVERS, default="target",
                        help="target: the embedded Chainlit target (every candidate); echo: "
                        "the WebSocket echo server, a server that keeps up (ours only)")
    parser.add_argument("--grace", type=float, default=120.0,
                        help="seconds beyond --duration before a client is killed")
    parser.add_argument("--target-cpu", help="CPU list for the target (default: the first)")
    parser.add_argument("--client-cpu", help="CPU list for the clients (default: the second)")
    parser.add_argument("--json", type=Path, help="write every run and the settings here")
    parser.add_argument("--log-dir", type=Path, help="client and target logs (default: a temp dir)")
    parser.add_argument("--from-json", help="run nothing: print the table of these --json "
                        "files (comma-separated)")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    args.candidates = [name.strip() for name in args.candidates.split(",") if name.strip()]
    unknown = sorted(set(args.candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {','.join(CANDIDATES)}")
    if args.rounds < 1 or not args.sizes or min(args.sizes) < 1:
        parser.error("--rounds and every size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        saved = runs_from([Path(path) for path in args.from_json.split(",") if path.strip()])
        sizes = sorted({run.sessions for run in saved})
        names = [name for name in CANDIDATES if any(run.candidate == name for run in saved)]
        print(table(saved, sizes, names))
        return 0
    cpus_for(args)
    folder = (args.log_dir or Path(tempfile.mkdtemp(prefix="bench-chat-"))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    names = list(args.candidates)
    skipped: dict[str, str] = {}
    runs: list[Run] = []
    for round_number in range(1, args.rounds + 1):
        for size in args.sizes:
            for name in names:
                if name in skipped:
                    continue
                print(f"round {round_number}: {name} N={size}", file=sys.stderr, flush=True)
                try:
                    run = measure(CANDIDATES[name], size, round_number, args, folder)
                except Unavailable as exc:
                    skipped[name] = str(exc)
                    print(exc, file=sys.stderr, flush=True)
                    continue
                runs.append(run)
                print(f"  {run.status}: {run.turns} turns, CPU {run.cpu_s:.1f} s, "
                      f"peak {run.peak_connected} connected, RSS {run.rss_peak_mib:.0f} MiB",
                      file=sys.stderr, flush=True)
    print(table(runs, args.sizes, [name for name in names if name not in skipped]))
    for reason in skipped.values():
        print(f"\n{reason}")
    print(f"\nlogs: {folder}", file=sys.stderr)
    if args.json:
        settings = {key: (str(value) if isinstance(value, Path) else value)
                    for key, value in vars(args).items()}
        args.json.write_text(json.dumps({
            "settings": settings, "skipped": skipped,
            "runs": [{**asdict(run), "cpu_per_1000_turns": run.cpu_per_1000_turns,
                      "target_cpu_per_1000_turns": run.target_cpu_per_1000_turns,
                      "handshakes_per_1000_turns": run.handshakes_per_1000_turns,
                      "rss_kib_per_session": run.rss_kib_per_session} for run in runs]},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
