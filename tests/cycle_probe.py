"""Resume real sessions; print, as JSON, what of ours the cycle collector found meanwhile.

``python tests/cycle_probe.py RUNTIME PROTOCOL URL`` (see ``test_reference_cycles.py``).
A process of its own, so no other test's leftovers die inside the window, and
gevent's patching comes first when asked for.
"""

import sys

if __name__ == "__main__" and sys.argv[1] == "gevent":
    from gevent import monkey

    monkey.patch_all()

import gc  # after patching, on purpose
import json
from collections import Counter

from supervisor import RestartPolicy, SessionSpec, Supervisor
from supervisor.spec import ProtocolName

SESSIONS = 3
RESUMES = 4
TIMEOUT = 20.0
OWNERS = ("supervisor", "websocket")
"""Top-level modules whose objects must not be cyclic garbage."""


def resume_each(sup: Supervisor, protocol: ProtocolName, url: str) -> None:
    """Open sessions, resume each ``RESUMES`` times (a chat turn after each on Chainlit),
    close them."""
    sessions = [sup.open(SessionSpec(url=url, protocol=protocol, thread_id=f"t{index}"))
                for index in range(SESSIONS)]
    for round_ in range(RESUMES):
        thread = f"round-{round_}"
        for future in [session.resume(thread, timeout=TIMEOUT) for session in sessions]:
            assert future.get(timeout=TIMEOUT).thread_id == thread
        if protocol == "chainlit":
            for turn in [session.chat(thread, timeout=TIMEOUT) for session in sessions]:
                assert turn.get(timeout=TIMEOUT).turn_s is not None
    for session in sessions:
        session.close().get(timeout=TIMEOUT)


def main(protocol: ProtocolName, url: str) -> Counter[str]:
    found: Counter[str] = Counter()
    with Supervisor.start(RestartPolicy()) as sup:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        resume_each(sup, protocol, url)
        gc.collect()
        gc.set_debug(0)
    for obj in gc.garbage:
        module = type(obj).__module__ or ""
        if module.split(".")[0] in OWNERS:
            found[f"{module}.{type(obj).__qualname__}"] += 1
    return found


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[2], sys.argv[3])))  # type: ignore[arg-type]
