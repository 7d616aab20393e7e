"""The locustfile of ``supervisor loadtest --processes``: the run file's protocol, one class.

Locust imports this file in the master and in every worker; the run file
(``SUPERVISOR_LOCUST_RUN``) holds the whole load-test config, so every
process plays exactly the scenario ``supervisor loadtest`` was given.
"""

from __future__ import annotations

import os

from supervisor.locust._options import RUN_FILE_ENV, read_run_file
from supervisor.locust._users import ChainlitUser, SocketIOUser, SupervisedUser, WebSocketUser

_BASES: dict[str, type[SupervisedUser]] = {
    "chainlit": ChainlitUser, "socketio": SocketIOUser, "websocket": WebSocketUser}

_PROTOCOL = read_run_file(os.environ[RUN_FILE_ENV]).config.protocol

LoadTestUser = type("LoadTestUser", (_BASES[_PROTOCOL],),
                    {"__module__": __name__, "__doc__": "One session of the load test."})
