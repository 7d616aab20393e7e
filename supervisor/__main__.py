"""``python -m supervisor``: the ``supervisor`` command.

``--runtime gevent`` must patch before anything else is imported. By the time
this file runs, Python has imported the ``supervisor`` package, which leaves
pykka, websocket-client and ssl out until first used, so
:func:`supervisor.cli.main` can still patch in place.
"""

import sys

from supervisor.cli import main

if __name__ == "__main__":
    sys.exit(main())
