"""A scenario for ``supervisor loadtest --scenario docs/examples/loadtest_scenario.py:scenario``.

The load test calls ``scenario(user)`` whenever one of a session's turns is due
(``--think-time`` apart, at most ``--turns``). ``user.chat(text)`` is a measured
turn (first token, turn time, errors) and returns False when it failed;
``user.think(seconds)`` pauses, cut short when the run ends; ``user.rng`` is the
session's own random source, seeded from ``--seed``; ``user.session`` is the
supervised session itself, for anything else.
"""

from __future__ import annotations

from supervisor.loadtest.scenario import ScenarioSession

CITIES = ("Paris", "Rome", "Madrid", "Lisbon")


def scenario(user: ScenarioSession) -> None:
    """Ask about a city, then follow up once, like a user who reads the answer first."""
    city = user.rng.choice(CITIES)
    if user.chat(f"Tell me about {city}") and user.think(0.2):
        user.chat(f"scenario follow-up {user.number}: and what is there to eat in {city}?")
