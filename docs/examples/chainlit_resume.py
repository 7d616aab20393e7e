"""Log in, chat in two threads, and switch between them with Resume.

Runs against the embedded Chainlit-compatible target, so it needs no server of
your own; point ``URL`` at a real Chainlit app to try it there.
"""

from __future__ import annotations

import uuid

from supervisor import SessionSpec, Supervisor
from supervisor.chainlit_auth import login
from supervisor.target import TargetServer


def main() -> None:
    with TargetServer(require_login=True) as target:
        url = target.url
        cookies = login(url, "alice", "alice")  # this session's own access_token cookie
        first, second = str(uuid.uuid4()), str(uuid.uuid4())  # thread ids we choose
        with Supervisor.start() as sup:
            session = sup.open(SessionSpec(url=url, protocol="chainlit", thread_id=first,
                                           cookies=cookies))
            for thread_id in (first, second):
                result = session.resume(thread_id).get(timeout=10)
                print(f"thread {thread_id[:8]}: found={result.found}")  # new: not found yet
                turn = session.chat(f"hello from {thread_id[:8]}").get(timeout=10)
                print(f"  reply {turn.text!r}, first token after {turn.first_token_s:.3f}s")
            result = session.resume(first).get(timeout=10)
            history = [step["output"] for step in result.thread["steps"]]
            print(f"back in {first[:8]}: found={result.found}, history={history}")


if __name__ == "__main__":
    main()
