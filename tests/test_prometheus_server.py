"""A real Prometheus server scrapes SupervisorCollector and reads back what state() says.

Needs Debian's ``prometheus`` package (``.ci/run`` installs it); the test
skips, with the reason in the summary, where the binary is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from chainlit_app.harness import free_port
from prometheus_client import CollectorRegistry, start_http_server
from support import fast_policy
from target_process import TargetProcess

from supervisor import SessionSpec, Supervisor
from supervisor.prometheus import SupervisorCollector

TIMEOUT = 60.0
PROMETHEUS = shutil.which("prometheus")


def query(api: str, expression: str) -> list[dict[str, Any]]:
    """One PromQL instant query against the server's HTTP API."""
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_value(api: str, expression: str, expected: float) -> None:
    """Poll until the query answers ``expected`` (a scrape a second); bounded."""
    deadline = time.monotonic() + TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = query(api, expression)
        except OSError as exc:  # the server is still starting
            last = exc
        else:
            if last and float(last[0]["value"][1]) == expected:
                return
        time.sleep(0.2)
    msg = f"{expression} never read {expected}; last answer {last!r}"
    raise TimeoutError(msg)


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed "
                    "(Debian package 'prometheus'; .ci/run installs it)")
def test_prometheus_server_scrapes_the_collector() -> None:
    """Prometheus scrapes the endpoint and its PromQL answers match the sessions' states."""
    assert PROMETHEUS is not None
    registry = CollectorRegistry()
    with TargetProcess() as target, Supervisor.start(fast_policy()) as sup, \
            tempfile.TemporaryDirectory(prefix="prometheus-") as work:
        registry.register(SupervisorCollector(sup))
        exporter, exporter_thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        first = [str(uuid.uuid4()) for _ in range(3)]
        sessions = [sup.open(SessionSpec(url=target.url, protocol="chainlit", thread_id=thread,
                                         connect_timeout=15)) for thread in first]
        for session, thread in zip(sessions, first, strict=True):
            # Resuming the thread it opened with answers once connected: no handshake
            # is aborted half-way, so the target logs exactly the connects made.
            session.resume(thread).get(timeout=15)
            session.resume(str(uuid.uuid4())).get(timeout=15)
        config = Path(work) / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: supervisor\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{exporter.server_port}']\n")
        web = f"127.0.0.1:{free_port()}"
        server = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address={web}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            api = f"http://{web}"
            wait_for_value(api, 'up{job="supervisor"}', 1)
            wait_for_value(api, 'supervisor_sessions{status="connected"}', 3)
            handshakes = sum(session.state().handshakes for session in sessions)
            wait_for_value(api, "supervisor_handshakes_total", handshakes)
            wait_for_value(api, "supervisor_resumes_total", 3)
            assert len(target.handshakes()) == handshakes == 6
            wait_for_value(api, "supervisor_connect_seconds_count", 6)
        finally:
            server.terminate()
            server.wait(timeout=30)
            exporter.shutdown()
            exporter.server_close()
            exporter_thread.join(10)
