"""Run pytest in a gevent-patched process: ``python tests/run_gevent.py [pytest args]``.

``monkey.patch_all()`` must come before anything imports threading, socket or
ssl, so it is the first thing here; pykka's ThreadingActor and websocket-client
then run on greenlets unchanged.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402 - after patching, on purpose
import sys  # noqa: E402

import pytest  # noqa: E402

if __name__ == "__main__":
    os.environ["SUPERVISOR_TEST_RUNTIME"] = "gevent"
    sys.exit(pytest.main(sys.argv[1:]))
