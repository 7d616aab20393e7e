"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pykka
import pytest
from recording_server import RecordingServer
from support import fast_policy

from supervisor import Supervisor


@pytest.fixture(scope="session")
def recording_server_process() -> Iterator[RecordingServer]:
    """One recording WebSocket server subprocess for the whole test run."""
    with RecordingServer() as server:
        yield server


@pytest.fixture
def ws_server(recording_server_process: RecordingServer) -> RecordingServer:
    """The shared recording server, reset (log, faults, leftover connections) per test."""
    recording_server_process.reset()
    return recording_server_process


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    """Stop every actor a test left running, so one test's sessions never touch the next."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    """A supervisor with millisecond backoffs, stopped after the test."""
    sup = Supervisor.start(fast_policy())
    yield sup
    sup.stop(timeout=15)
