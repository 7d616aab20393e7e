"""The extra Chainlit versions the interop tests run, each in its own virtualenv.

``tests/interop/setup.sh`` builds them (``.ci/run`` does); a test that needs a
missing one skips with that command. 2.12 runs from the test extra itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

VENVS = Path(__file__).resolve().parent.parent / "interop" / ".venvs"
SETUP_COMMAND = "bash tests/interop/setup.sh"


@dataclass(frozen=True)
class ChainlitVersion:
    """One pinned Chainlit release and how the test app runs on it."""

    version: str
    config: str
    """The file under ``tests/chainlit_app/.chainlit/`` that becomes its config.toml."""
    identity: str
    """``"1"`` (handshake headers) or ``"2"`` (auth payload)."""

    @property
    def python(self) -> Path:
        return VENVS / f"chainlit-{self.version}" / "bin" / "python"

    def require(self) -> str:
        """The interpreter path, or skip (loudly, with the command that installs it)."""
        if not self.python.exists():
            pytest.skip(f"Chainlit {self.version} is not installed for the interop tests: "
                        f"run {SETUP_COMMAND}")
        return str(self.python)


CHAINLIT_1_3 = ChainlitVersion("1.3.2", "config-1.x.toml", identity="1")
CHAINLIT_2_0 = ChainlitVersion("2.0.1", "config-2.0.toml", identity="2")
EXTRA_VERSIONS = (CHAINLIT_1_3, CHAINLIT_2_0)
