"""Run one of the interop tests' third-party servers by hand, e.g. to measure it.

    python tests/interop/serve.py node              # official Socket.IO (auth {"token":"good"})
    python tests/interop/serve.py chainlit-1.3.2    # the test app, users alice/alice-pw, bob/bob-pw
    python tests/interop/serve.py chainlit-2.0.1
    python tests/interop/serve.py chainlit-2.12     # the test extra's Chainlit

Prints the server's URL, then serves until Ctrl-C. ``bash tests/interop/setup.sh``
installs node's socket.io and the extra Chainlit versions first.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chainlit_app.harness import ChainlitApp
from chainlit_app.versions import EXTRA_VERSIONS

from interop.node_server import NodeSocketIOServer


def server(name: str) -> AbstractContextManager[Any]:
    if name == "node":
        return NodeSocketIOServer()
    if name == "chainlit-2.12":
        return ChainlitApp()
    for version in EXTRA_VERSIONS:
        if name == f"chainlit-{version.version}":
            if not version.python.exists():
                raise SystemExit(f"{name} is not installed: run bash tests/interop/setup.sh")
            return ChainlitApp(python=str(version.python), config=version.config)
    raise SystemExit(f"unknown server {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="node, chainlit-1.3.2, chainlit-2.0.1 or chainlit-2.12")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server(args.name) as running:
        print(running.url, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
