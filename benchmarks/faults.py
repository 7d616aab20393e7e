"""Hostile-peer figures for docs/faults.md: flood RSS, stalled-peer answer times, and more.

    python benchmarks/faults.py flood [--gevent] [--seconds 20]
    python benchmarks/faults.py stalled [--gevent]
    python benchmarks/faults.py huge [--gevent]
    python benchmarks/faults.py trickle [--gevent]

Each scenario starts its misbehaving server in a child process (``--serve``),
so the client's RSS is the client's alone, and prints one JSON line of figures.
``--gevent`` applies ``gevent.monkey.patch_all()`` before anything else.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse  # after patching, on purpose
import base64
import hashlib
import json
import socket
import statistics
import subprocess
import threading
import time
from typing import Any

KIB = 1024
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --- the misbehaving server (child process, plain threads) ---------------------------


def serve(port_out: Any) -> None:
    """Per path: /flood floods 1 KiB frames, /echo echoes, /stall never reads, /huge lies."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(f"PORT {listener.getsockname()[1]}", file=port_out, flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(sock,), daemon=True).start()


def _serve_one(sock: socket.socket) -> None:
    try:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(4096)
        head, rest = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        if path.startswith("/trickle"):  # one byte every 0.5 s, never a whole head
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX: " + b"a" * 99:
                sock.sendall(bytes([byte]))
                time.sleep(0.5)
            return
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(  # noqa: S324 - RFC 6455
            (headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        if path == "/flood":
            payload = b"f" * KIB
            batch = (bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload) * 64
            while True:
                sock.sendall(batch)
        elif path == "/stall":
            time.sleep(3600)
        elif path == "/huge":
            sock.sendall(bytes([0x82, 127]) + (50 * KIB * KIB).to_bytes(8, "big") + b"x" * 100)
            time.sleep(3600)
        else:
            _echo(sock, rest)
    except OSError:
        pass
    finally:
        sock.close()


def _echo(sock: socket.socket, buffer: bytes) -> None:
    while True:
        while len(buffer) < 6:
            buffer += sock.recv(65536)
        length, offset = buffer[1] & 0x7F, 2
        if length == 126:
            length, offset = int.from_bytes(buffer[2:4], "big"), 4
        while len(buffer) < offset + 4 + length:
            buffer += sock.recv(65536)
        key = buffer[offset:offset + 4]
        body = buffer[offset + 4:offset + 4 + length]
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(body))
        opcode = buffer[0] & 0x0F
        buffer = buffer[offset + 4 + length:]
        if opcode == 0x8:
            return
        head = bytes([0x80 | opcode]) + (bytes([length]) if length < 126 else
                                         bytes([126]) + length.to_bytes(2, "big"))
        sock.sendall(head + payload)


# --- the client ------------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                              text=True)
    assert server.stdout is not None
    port = server.stdout.readline().split()[1]
    return server, f"ws://127.0.0.1:{port}"


def flood(base: str, seconds: float) -> dict[str, Any]:
    """A slow consumer under a flood: RSS over time, and an unrelated session's echo RTT."""
    from supervisor import Event, SessionSpec, Supervisor  # noqa: PLC0415

    received = [0]
    slow = threading.Event()

    def slow_consumer(_event: Event) -> None:
        received[0] += 1
        slow.wait(0.001)  # 1 ms of work per frame: slower than the network

    rtts: list[float] = []
    sent_at: dict[str, float] = {}
    echoed = threading.Event()

    def on_echo(event: Event) -> None:
        rtts.append(time.monotonic() - sent_at[str(event.data)])
        echoed.set()

    with Supervisor.start() as sup:
        echo = sup.open(SessionSpec(url=f"{base}/echo", on_event=on_echo))
        echo.resume(None).get(timeout=10)
        start_rss = rss_mib()
        flooded = sup.open(SessionSpec(url=f"{base}/flood", on_event=slow_consumer))
        flooded.resume(None).get(timeout=10)
        curve: list[tuple[float, float]] = [(0.0, start_rss)]
        started = time.monotonic()
        backlog_max = 0
        n = 0
        while (elapsed := time.monotonic() - started) < seconds:
            echoed.clear()
            text = f"ping-{n}"
            n += 1
            sent_at[text] = time.monotonic()
            echo.send(text)
            echoed.wait(5)
            backlog_max = max(backlog_max, flooded.state().inbound_backlog)
            if elapsed >= len(curve) * 5:
                curve.append((round(elapsed, 1), rss_mib()))
            slow.wait(0.01)
        curve.append((round(time.monotonic() - started, 1), rss_mib()))
        close_started = time.monotonic()
        flooded.close().get(timeout=30)
        close_s = time.monotonic() - close_started
    return {"scenario": "flood", "rss_mib": curve, "frames_handled": received[0],
            "inbound_backlog_max": backlog_max, "echo_rtt_median_ms":
            round(statistics.median(rtts) * 1000, 2), "echo_rtt_p99_ms":
            round(sorted(rtts)[int(len(rtts) * 0.99)] * 1000, 2), "close_s": round(close_s, 3)}


def stalled(base: str) -> dict[str, Any]:
    """A peer that stops reading: answer times of state/resume/close/stop; sends' outcomes."""
    import pykka  # noqa: PLC0415

    from supervisor import OutboxFull, SessionSpec, Supervisor  # noqa: PLC0415

    sup = Supervisor.start()
    session = sup.open(SessionSpec(url=f"{base}/stall", thread_id="t-1"))
    session.resume("t-1").get(timeout=10)
    futures = [session.send(b"x" * (64 * KIB)) for _ in range(400)]
    futures += [session.send(b"y" * (64 * KIB)) for _ in range(3000)]
    time.sleep(1.0)  # let the socket buffers fill: the stall is what is measured
    timings: dict[str, float] = {}
    started = time.monotonic()
    state = session.state()
    timings["state_s"] = time.monotonic() - started
    started = time.monotonic()
    session.resume("t-2").get(timeout=10)
    timings["resume_s"] = time.monotonic() - started
    futures += [session.send(b"z" * (64 * KIB)) for _ in range(400)]
    started = time.monotonic()
    session.close().get(timeout=10)
    timings["close_s"] = time.monotonic() - started
    started = time.monotonic()
    sup.stop(timeout=5)
    timings["stop_s"] = time.monotonic() - started
    outcomes = {"written": 0, "OutboxFull": 0, "other_error": 0, "pending": 0}
    for future in futures:
        try:
            future.get(timeout=0)
            outcomes["written"] += 1
        except pykka.Timeout:
            outcomes["pending"] += 1
        except OutboxFull:
            outcomes["OutboxFull"] += 1
        except Exception:  # counted by kind
            outcomes["other_error"] += 1
    return {"scenario": "stalled", **{k: round(v, 4) for k, v in timings.items()},
            "outbox_at_state": state.outbox, "sends": outcomes}


def huge(base: str) -> dict[str, Any]:
    """A 50 MB frame announced: time to end the connection, RSS before and after."""
    from supervisor import Lifecycle, LifecycleKind, SessionSpec, Supervisor  # noqa: PLC0415

    lost = threading.Event()
    seen: list[Lifecycle] = []

    def on_lifecycle(item: Lifecycle) -> None:
        if item.kind is LifecycleKind.LOST:
            seen.append(item)
            lost.set()

    with Supervisor.start() as sup:
        before = rss_mib()
        started = time.monotonic()
        session = sup.open(SessionSpec(url=f"{base}/huge", on_lifecycle=on_lifecycle))
        lost.wait(10)
        took = time.monotonic() - started
        after = rss_mib()
        count = session.state().oversized_messages
    return {"scenario": "huge", "ended_s": round(took, 3), "error": seen[0].error,
            "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "oversized_messages": count}


def trickle(base: str) -> dict[str, Any]:
    """100 Chainlit sessions whose GET /user trickles; admission 100: does anyone get in?"""
    from supervisor import (  # noqa: PLC0415
        Lifecycle,
        LifecycleKind,
        RestartPolicy,
        SessionSpec,
        Supervisor,
    )

    http = base.replace("ws://", "http://")
    failed: list[float] = []
    all_failed = threading.Event()

    def on_lifecycle(item: Lifecycle) -> None:
        if item.kind is LifecycleKind.FAILED:
            failed.append(time.monotonic())
            if len(failed) == 100:
                all_failed.set()

    policy = RestartPolicy(max_restarts=0, max_handshakes_in_flight=100)
    with Supervisor.start(policy) as sup:
        started = time.monotonic()
        for i in range(100):
            sup.open(SessionSpec(url=f"{http}/trickle{i}", protocol="chainlit",
                                 connect_timeout=2.0, on_lifecycle=on_lifecycle))
        all_failed.wait(30)
        all_failed_s = max(failed) - started
        started = time.monotonic()
        healthy = sup.open(SessionSpec(url=f"{base}/echo"))
        healthy.resume(None).get(timeout=30)
        healthy_s = time.monotonic() - started
    return {"scenario": "trickle", "sessions": 100, "failed": len(failed),
            "all_failed_s": round(all_failed_s, 2), "healthy_connect_after_s":
            round(healthy_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", choices=("flood", "stalled", "huge", "trickle"))
    parser.add_argument("--gevent", action="store_true")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(sys.stdout)
        return
    server, base = start_server()
    try:
        if args.scenario == "flood":
            result = flood(base, args.seconds)
        elif args.scenario == "stalled":
            result = stalled(base)
        elif args.scenario == "trickle":
            result = trickle(base)
        else:
            result = huge(base)
    finally:
        server.kill()
        server.wait()
    result["runtime"] = "gevent" if args.gevent else "threads"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
