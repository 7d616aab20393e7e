"""Reading a Socket.IO packet's JSON: ``json.loads`` against the library's ``packet.loads``.

    python benchmarks/packet_json.py

The packets are the shapes the embedded target sends in every chat turn (a
streamed token, a step as ``new_message``) and the reply to a connect. Each is
read ``--number`` times by each reader; prints microseconds per read, the
ratio, and checks that both readers give the same data.
"""

from __future__ import annotations

import argparse
import functools
import json
import timeit
from typing import Any

from supervisor.protocols.packet import dumps, loads

STEP: dict[str, Any] = {
    "id": "6f1c2b9e-8d4a-4f3b-a2c1-0e9d8c7b6a54",
    "threadId": "0b7c3f4e-2a8d-4c1e-9f6a-5d3b2c1a0e9f",
    "parentId": None, "createdAt": "2026-12-03T17:00:00.123Z", "start": None, "end": None,
    "output": "hello world token", "name": "Assistant", "type": "assistant_message",
    "streaming": True, "isError": False, "waitForAnswer": False, "metadata": {}, "tags": None,
    "language": None, "indent": 0, "showInput": None, "defaultOpen": False,
}
PACKETS: dict[str, Any] = {
    "stream_token": ["stream_token", {"id": STEP["id"], "token": "hello ", "isSequence": False,
                                      "isInput": False}],
    "new_message": ["new_message", STEP],
    "connect reply": {"sid": "Zs0nH8c4l6J2mGzyAAAB"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=100_000, help="reads per reader and packet")
    args = parser.parse_args()
    print("| packet | bytes | json.loads µs | packet.loads µs | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, value in PACKETS.items():
        text = dumps(value)
        assert loads(text) == json.loads(text), name
        plain = timeit.timeit(functools.partial(json.loads, text), number=args.number)
        ours = timeit.timeit(functools.partial(loads, text), number=args.number)
        per = 1e6 / args.number
        print(f"| {name} | {len(text)} | {plain * per:.2f} | {ours * per:.2f} | "
              f"{ours / plain:.2f} |")


if __name__ == "__main__":
    main()
