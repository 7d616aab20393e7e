"""The layering written in ``supervisor/__init__.py`` holds in the import graph."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "supervisor"


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.level:
                msg = f"{path}: relative import of {node.module!r}; the package uses absolute ones"
                raise AssertionError(msg)
            names.add(node.module)
    return names


class TestProtocolLayer:
    """The protocol layer is pure: it imports only itself and the standard library."""

    def test_protocols_import_nothing_above_them(self) -> None:
        """No protocols module imports another supervisor module or a third party."""
        offenders: dict[str, set[str]] = {}
        for path in sorted((PACKAGE / "protocols").glob("*.py")):
            bad = {name for name in imported_modules(path)
                   if not name.startswith("supervisor.protocols")
                   and name.split(".")[0] not in sys.stdlib_module_names
                   and name != "__future__"}
            if bad:
                offenders[path.name] = bad
        assert offenders == {}

    def test_the_check_sees_imports(self) -> None:
        """The import scan finds a known import (so an empty result above means something)."""
        socketio = PACKAGE / "protocols" / "socketio.py"
        assert "supervisor.protocols.base" in imported_modules(socketio)
