"""Resume latency: from ``resume(t)`` to ``resume_thread`` for one Chainlit session.

    python benchmarks/resume_latency.py                      # the embedded target
    python benchmarks/resume_latency.py --url http://127.0.0.1:8000 --login alice:alice-pw
    python benchmarks/resume_latency.py --url http://127.0.0.1:3000 --protocol socketio \
        --auth '{"token": "good"}'                            # any Socket.IO server

Chainlit: creates two threads, then switches one supervised session between
them ``--switches`` times, timing each switch until the server's
``resume_thread`` arrives. Socket.IO: times each switch until the new
connection's namespace CONNECT is accepted. Prints p50 / p90 / max in ms.
``python tests/interop/serve.py NAME`` starts the third-party servers the
interop tests use (Node socket.io, Chainlit 1.3.2, 2.0.1, 2.12).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from contextlib import ExitStack

from supervisor import SessionSpec, Supervisor
from supervisor.chainlit_auth import login
from supervisor.target import TargetServer


def measure(url: str, cookies: dict[str, str], switches: int) -> list[float]:
    """Seconds per switch, after creating the two threads it switches between."""
    with Supervisor.start() as sup:
        threads = [str(uuid.uuid4()) for _ in range(2)]
        session = sup.open(SessionSpec(url=url, protocol="chainlit", cookies=cookies))
        for thread_id in threads:  # the first message creates the thread under our id
            session.resume(thread_id).get(timeout=30)
            session.chat("create this thread").get(timeout=30)
        time.sleep(0.5)  # real Chainlit persists steps after task_end; let them land
        latencies = []
        for switch in range(switches):
            thread_id = threads[switch % 2]
            started = time.perf_counter()
            result = session.resume(thread_id).get(timeout=30)
            latencies.append(time.perf_counter() - started)
            if result.found is not True:
                msg = f"switch {switch}: the server did not resume {thread_id}: {result}"
                raise SystemExit(msg)
        return latencies


def measure_socketio(url: str, auth: dict[str, object] | None, switches: int) -> list[float]:
    """Seconds per switch of a plain Socket.IO session (reconnect with the new thread)."""
    with Supervisor.start() as sup:
        session = sup.open(SessionSpec(url=url, protocol="socketio", auth=auth))
        session.resume("warm-up").get(timeout=30)
        latencies = []
        for switch in range(switches):
            started = time.perf_counter()
            session.resume(f"thread-{switch % 2}").get(timeout=30)
            latencies.append(time.perf_counter() - started)
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--url", help="a Chainlit app (default: start the embedded target)")
    parser.add_argument("--login", help="USER:PASSWORD for the app's password auth")
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--protocol", choices=("chainlit", "socketio"), default="chainlit")
    parser.add_argument("--auth", type=json.loads, help="socketio: the connect auth (JSON)")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.url or stack.enter_context(TargetServer()).url
        if args.protocol == "socketio":
            seconds = measure_socketio(url, args.auth, args.switches)
        else:
            cookies = login(url, *args.login.split(":", 1)) if args.login else {}
            seconds = measure(url, cookies, args.switches)
        ms = sorted(second * 1000 for second in seconds)
    p90 = ms[max(0, round(0.9 * len(ms)) - 1)]
    until = "namespace connected" if args.protocol == "socketio" else "resume_thread"
    print(f"{url}: {len(ms)} switches, resume -> {until} "
          f"p50 {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms, max {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
