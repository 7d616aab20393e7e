"""The programs in docs/examples run as written (so the docs cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def run(script: Path) -> str:
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_websocket_example_shows_each_echo_on_its_thread() -> None:
    """Each echo comes back labelled with, and tagged by the server with, its thread."""
    out = run(EXAMPLES / "websocket_resume.py")
    assert '[thread-1] {"thread": "thread-1", "text": "hello from thread-1"}' in out
    assert '[thread-2] {"thread": "thread-2", "text": "hello from thread-2"}' in out


def test_chainlit_example_resumes_a_thread_with_its_history() -> None:
    """The example logs in, chats in two threads and gets the first one's history back."""
    out = run(EXAMPLES / "chainlit_resume.py")
    assert out.count("found=False") == 2
    assert re.search(r"back in \w+: found=True, history=\['hello from \w+'", out)


@pytest.mark.parametrize("name", ["README.md"])
def test_readme_example_is_the_websocket_example(name: str) -> None:
    """The README shows the example file's code verbatim, so it runs as written."""
    readme = (ROOT / name).read_text()
    example = (EXAMPLES / "websocket_resume.py").read_text()
    body = example[example.index("from __future__"):]
    assert body.strip() in readme
