"""The concurrency tests again, in a gevent-patched subprocess (DESIGN.md: both runtimes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gevent import monkey

TESTS = Path(__file__).parent


def test_concurrency_suite_passes_under_gevent() -> None:
    """Every test marked ``concurrency`` passes with gevent.monkey.patch_all() applied first."""
    result = subprocess.run(
        [sys.executable, str(TESTS / "run_gevent.py"), "-m", "concurrency", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(TESTS.parent), str(TESTS)],
        capture_output=True, text=True, timeout=600, check=False, cwd=TESTS.parent,
    )
    summary = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    assert " passed" in result.stdout, summary


@pytest.mark.concurrency
def test_runtime_is_the_one_asked_for() -> None:
    """The concurrency tests really run patched under gevent and unpatched on threads."""
    patched = monkey.is_module_patched("threading") and monkey.is_module_patched("socket")
    assert patched == (os.environ.get("SUPERVISOR_TEST_RUNTIME") == "gevent")
