"""The hook for a user's own scenario: ``--scenario MODULE:FUNCTION``.

The function is called with a :class:`ScenarioSession` each time one of the
session's turns is due (``--think-time`` apart, at most ``--turns``), between the
resumes the load test schedules itself. Whatever it does through
:meth:`ScenarioSession.chat` is measured like the built-in turns; raw
:attr:`ScenarioSession.session` calls are the user's own. Example
(``docs/examples/loadtest_scenario.py``)::

    def scenario(user):
        if user.chat("What is the capital of France?"):
            user.chat("And of Italy?")
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from supervisor.session import Session

if TYPE_CHECKING:
    from supervisor.loadtest.driver import Driver


class ScenarioSession:
    """What a scenario function is given: one load-test session and measured actions."""

    __slots__ = ("_driver", "session")

    def __init__(self, driver: Driver, session: Session) -> None:
        self._driver = driver
        self.session = session
        """The supervised :class:`~supervisor.session.Session` itself."""

    @property
    def number(self) -> int:
        """This session's number, 1 for the first one started."""
        return self._driver.number

    @property
    def rng(self) -> random.Random:
        """This session's random source (seeded from ``--seed``: reproducible)."""
        return self._driver.rng

    @property
    def threads(self) -> tuple[str, ...]:
        """The thread ids this session cycles through with resumes."""
        return tuple(self._driver.threads)

    @property
    def ending(self) -> bool:
        """True once the run ended or the load shape retired this session: return soon."""
        return self._driver.ending

    def chat(self, text: str) -> bool:
        """One measured turn: send ``text``, wait for the reply; False if it failed."""
        return self._driver.turn(self.session, text)

    def think(self, seconds: float) -> bool:
        """Wait ``seconds`` (cut short when the run ends); False once it has ended."""
        self._driver.pause(min(seconds, self._driver.ctx.remaining()))
        return not self.ending
