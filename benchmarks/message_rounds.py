"""Messages/s round by round, with the cycle collector on or off: what a full collection
costs a burst of messages.

    python benchmarks/pinned.py 1 -- python benchmarks/message_rounds.py --sessions 5000
    python benchmarks/pinned.py 1 -- python benchmarks/message_rounds.py --sessions 5000 --no-gc

Opens ``--sessions`` sessions on gevent to the echo server (started on CPU 0), resumes
each once (as ``bench_sessions.py`` does), then runs ``--rounds`` rounds of one message
per session, each round timed from the first send to the last echo. ``--no-gc``
disables the collector for the rounds only. Prints each round's seconds, the median
messages/s, and the full collections that ran during the rounds with their seconds.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - after patching, on purpose
import gc  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from supervisor import Event, RestartPolicy, SessionSpec, Supervisor  # noqa: E402

HERE = Path(__file__).resolve().parent
TIMEOUT = 120.0


class Echoes:
    """Counts echoes; set once ``expected`` have come."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.count = 0
        self.expected = 0

    def expect(self, count: int) -> None:
        self.count, self.expected = 0, count
        self.done.clear()

    def __call__(self, _event: Event) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-gc", action="store_true", help="collector off during the rounds")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(HERE / "pinned.py"), "0", "--",
                               sys.executable, str(HERE / "echo_server.py"), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url = f"ws://127.0.0.1:{int(server.stdout.readline().split()[1])}/ws"
    full: list[float] = []
    started = [0.0]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                full.append(time.perf_counter() - started[0])

    echoes = Echoes()
    policy = RestartPolicy(max_handshakes_in_flight=200, max_handshakes_per_second=5000)
    try:
        with Supervisor.start(policy) as sup:
            sessions = [sup.open(SessionSpec(url=url, thread_id=f"a{index}", on_event=echoes))
                        for index in range(args.sessions)]
            for future in [session.resume(f"b{index}", timeout=TIMEOUT)
                           for index, session in enumerate(sessions)]:
                future.get(timeout=TIMEOUT)
            if args.no_gc:
                gc.disable()
            gc.callbacks.append(on_collection)
            seconds = []
            for _ in range(args.rounds):
                echoes.expect(len(sessions))
                begun = time.perf_counter()
                for session in sessions:
                    session.send("m")
                if not echoes.done.wait(TIMEOUT):
                    raise SystemExit(f"only {echoes.count} echoes in {TIMEOUT:g}s")
                seconds.append(time.perf_counter() - begun)
            gc.callbacks.remove(on_collection)
            gc.enable()
    finally:
        server.terminate()
    print("round seconds:", " ".join(f"{value:.3f}" for value in seconds))
    print(f"median messages/s: {args.sessions / statistics.median(seconds):,.0f}")
    print(f"full collections during the rounds: {len(full)}"
          + (f", {min(full):.3f}-{max(full):.3f} s each" if full else ""))


if __name__ == "__main__":
    main()
