"""``python -m supervisor``: the ``supervisor`` command.

``--runtime gevent`` must patch before anything else is imported; by the time
this file runs, Python has already imported the ``supervisor`` package (and
with it pykka and websocket-client), so :func:`supervisor.cli.main` restarts the
interpreter with the patch as its first statement when it is asked for gevent.
"""

import sys

from supervisor.cli import main

if __name__ == "__main__":
    sys.exit(main())
