"""Supervise one plain WebSocket session and switch its thread with Resume.

The embedded target's ``/ws/echo`` endpoint echoes each frame with the thread id
its connection's handshake carried, so the output shows the switch took effect.
"""

from __future__ import annotations

import queue

from supervisor import Event, SessionSpec, Supervisor
from supervisor.target import TargetServer


def main() -> None:
    inbox: queue.Queue[Event] = queue.Queue()  # on_event runs in the session's actor
    with TargetServer() as target, Supervisor.start() as sup:
        session = sup.open(SessionSpec(url=f"{target.ws_url}/ws/echo", thread_id="thread-1",
                                       on_event=inbox.put))
        for thread_id in ("thread-1", "thread-2"):
            session.resume(thread_id).get(timeout=10)  # connected with this thread's header
            session.send(f"hello from {thread_id}").get(timeout=10)  # written to the socket
            event = inbox.get(timeout=10)
            print(f"[{event.thread_id}] {event.data}")
        print(session.state())


if __name__ == "__main__":
    main()
