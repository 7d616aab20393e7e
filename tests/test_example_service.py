"""docs/examples/chat_service.py under uvicorn, driven over real HTTP with httpx.

The service runs as its own process, as a user would run it, against the
embedded target in another; the target's handshake log says which thread each
connect carried, independently of the service's own answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from target_process import TargetProcess, _readline

ROOT = Path(__file__).parent.parent
SERVICE = ROOT / "docs" / "examples" / "chat_service.py"
TIMEOUT = 20.0


class Service:
    """The example service in a subprocess on a free port."""

    def __init__(self, target_url: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVICE), "--target", target_url, "--port", "0"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        line = _readline(self.proc, TIMEOUT)
        if "listening on " not in line:
            self.stop()
            msg = f"the service did not start: {line!r}"
            raise RuntimeError(msg)
        self.url = line.rsplit(" ", 1)[1].strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def target() -> Iterator[TargetProcess]:
    """The embedded target streaming one token every 50 ms."""
    with TargetProcess("--token-delay", "0.05") as running:
        yield running


@pytest.fixture
def client(target: TargetProcess) -> Iterator[httpx.Client]:
    """An httpx client on the running service."""
    service = Service(target.url)
    try:
        with httpx.Client(base_url=service.url, timeout=TIMEOUT) as http:
            yield http
    finally:
        service.stop()


def metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed with prometheus_client's parser: (sample name, labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def wait_for_health(client: httpx.Client, status: int) -> dict[str, Any]:
    """Poll /health (state in another process) until it answers ``status``; bounded."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        response = client.get("/health")
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        if time.monotonic() > deadline:
            msg = f"/health stayed {response.status_code}: {response.text}"
            raise TimeoutError(msg)
        time.sleep(0.05)


def test_threads_switch_replies_stream_and_metrics_agree(
        client: httpx.Client, target: TargetProcess) -> None:
    """Switches reach the target, tokens stream, /metrics matches state() and the target log."""
    assert client.get("/health").status_code == 200  # no users yet: ready
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    switched = client.post("/users/alice/thread", json={"thread_id": first})
    assert switched.status_code == 200
    assert switched.json()["thread_id"] == first

    arrivals: list[tuple[float, str]] = []
    with client.stream("POST", "/users/alice/messages",
                       json={"text": "one two three four"}) as reply:
        assert reply.status_code == 200
        for chunk in reply.iter_text():
            arrivals.append((time.monotonic(), chunk))
    assert "".join(chunk for _, chunk in arrivals) == "one two three four"
    assert len(arrivals) >= 3  # token by token, not one body at the end
    assert arrivals[-1][0] - arrivals[0][0] >= 0.1  # the target spaces tokens 50 ms apart

    assert client.post("/users/alice/thread", json={"thread_id": second}).json()["found"] is False
    assert client.post("/users/bob/thread", json={"thread_id": first}).json()["found"] is True
    states = {user: client.get(f"/users/{user}").json() for user in ("alice", "bob")}
    assert states["alice"]["connected_thread_id"] == second
    assert states["bob"]["connected_thread_id"] == first
    logged = target.handshakes()
    assert [h["thread_id"] for h in logged] == [first, second, first]

    scraped = metrics(client)
    assert scraped[("supervisor_sessions", (("status", "connected"),))] == 2
    assert scraped[("supervisor_handshakes_total", ())] == len(logged) == sum(
        state["handshakes"] for state in states.values())
    assert scraped[("supervisor_resumes_total", ())] == 1  # alice's switch; bob opened on it
    assert scraped[("supervisor_connect_seconds_count", ())] == 3
    assert scraped[("supervisor_outbox_frames", ())] == 0


def test_health_follows_the_target_going_and_coming_back(target: TargetProcess) -> None:
    """/health answers 503 while the chat server is gone and 200 once sessions reconnect."""
    port = target.url.rsplit(":", 1)[1]
    service = Service(target.url)
    try:
        with httpx.Client(base_url=service.url, timeout=TIMEOUT) as client:
            for user in ("ann", "ben"):
                thread_id = str(uuid.uuid4())
                assert client.post(f"/users/{user}/thread",
                                   json={"thread_id": thread_id}).status_code == 200
            assert wait_for_health(client, 200)["connected"] == 2
            target.stop()
            down = wait_for_health(client, 503)
            assert down["connected"] == 0
            assert "sessions connected" in down["problems"][0]
            with TargetProcess("--port", port):
                up = wait_for_health(client, 200)
                assert up["connected"] == 2
                restarts = metrics(client)
            assert sum(value for (name, _), value in restarts.items()
                       if name == "supervisor_restarts_total") >= 2
    finally:
        service.stop()


def test_hostile_requests_are_refused(client: httpx.Client) -> None:
    """Bad user names, oversized or malformed bodies and control characters get a 400."""
    assert client.post("/users/a b/thread", json={"thread_id": "t"}).status_code in (400, 404)
    assert client.post("/users/x/thread", content=b"{" * 20_000).status_code == 400
    assert client.post("/users/x/thread", content=b"not json").status_code == 400
    assert client.post("/users/x/thread", json={"thread_id": "a\r\nb"}).status_code == 400
    assert client.post("/users/x/messages", json={"text": 3}).status_code == 400
    assert client.get("/users/nobody").status_code == 404
