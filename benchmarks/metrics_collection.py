"""How long a Prometheus scrape takes with N connected sessions, and what it costs the mailbox.

    python benchmarks/metrics_collection.py [--sessions 5000] [--runtime threads|gevent]

Starts ``echo_server.py`` in its own process, opens N plain WebSocket sessions
on one ``Supervisor``, waits until all are connected, then times:

- ``Supervisor.metrics()`` (the tap's sample: counters plus a sum over every
  session's published snapshot);
- a full scrape: ``generate_latest`` of a registry holding ``SupervisorCollector``;
- the round trip of a message through the supervisor actor's mailbox, idle
  and while another thread scrapes without pause: the scrape never enters the
  mailbox, so only GIL sharing can slow the round trip.

Prints one JSON object. Every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import sys


def _gevent_requested(argv: list[str]) -> bool:
    """``--runtime gevent`` asked for; read before any other import, to patch first."""
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    return "--runtime=gevent" in argv or ("--runtime", "gevent") in pairs


if __name__ == "__main__" and _gevent_requested(sys.argv):
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402 - after the gevent patch, on purpose
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from fd_limit import raise_fd_limit  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from supervisor import RestartPolicy, SessionSpec, SessionStatus, Supervisor  # noqa: E402
from supervisor._supervisor_actor import ListRecords  # noqa: E402
from supervisor.prometheus import SupervisorCollector  # noqa: E402

HERE = Path(__file__).parent


def timings_ms(action: Callable[[], object], repeat: int) -> dict[str, float]:
    """Median and max of ``repeat`` runs of ``action``, in milliseconds (after 3 warm-ups)."""
    for _ in range(3):
        action()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        runs.append((time.perf_counter() - started) * 1e3)
    return {"median_ms": round(statistics.median(runs), 2), "max_ms": round(max(runs), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--runtime", choices=("threads", "gevent"), default="threads")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each measurement")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on connecting all")
    args = parser.parse_args()
    raise_fd_limit()
    server = subprocess.Popen([sys.executable, str(HERE / "echo_server.py"), "--port", "0",
                               "--max-seconds", str(args.timeout + 120)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        policy = RestartPolicy(max_handshakes_in_flight=200, max_handshakes_per_second=5000)
        sup = Supervisor.start(policy)
        try:
            started = time.monotonic()
            for index in range(args.sessions):
                sup.open(SessionSpec(url=f"ws://127.0.0.1:{port}/", thread_id=f"t{index}",
                                     connect_timeout=60))
            deadline = started + args.timeout
            while sup.metrics().sessions[SessionStatus.CONNECTED] < args.sessions:
                if time.monotonic() > deadline:
                    print(json.dumps({"error": "not all connected", "sample": str(sup.metrics())}))
                    return 1
                time.sleep(0.2)
            connected_s = time.monotonic() - started
            registry = CollectorRegistry()
            registry.register(SupervisorCollector(sup))
            scrape = timings_ms(lambda: generate_latest(registry), args.repeat)
            sample = timings_ms(sup.metrics, args.repeat)
            mailbox = lambda: sup._ref.ask(ListRecords(), timeout=30)  # noqa: E731
            idle = timings_ms(mailbox, args.repeat)
            stop = threading.Event()

            def scrape_forever() -> None:
                while not stop.is_set():
                    generate_latest(registry)
                    time.sleep(0)  # a greenlet must yield for the others to run

            scraper = threading.Thread(target=scrape_forever, daemon=True)
            scraper.start()
            busy = timings_ms(mailbox, args.repeat)
            stop.set()
            scraper.join(30)
            result = {"sessions": args.sessions, "runtime": args.runtime,
                      "connected_in_s": round(connected_s, 1), "metrics_sample": sample,
                      "scrape": scrape, "exposition_bytes": len(generate_latest(registry)),
                      "mailbox_round_trip_idle": idle,
                      "mailbox_round_trip_while_scraping": busy}
            print(json.dumps(result, indent=2))
        finally:
            sup.stop(timeout=args.timeout)  # closing 5,000 sessions takes longer than the default
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
