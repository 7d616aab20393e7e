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


PURE_LIBRARIES = frozenset({"orjson"})
"""Third-party libraries the protocol layer may use: computation only, no I/O, no state."""


class TestProtocolLayer:
    """The protocol layer is pure: it imports itself, the standard library and pure libraries."""

    def test_protocols_import_nothing_above_them(self) -> None:
        """No protocols module imports another supervisor module or another third party."""
        offenders: dict[str, set[str]] = {}
        for path in sorted((PACKAGE / "protocols").glob("*.py")):
            bad = {name for name in imported_modules(path)
                   if not name.startswith("supervisor.protocols")
                   and name.split(".")[0] not in sys.stdlib_module_names
                   and name not in PURE_LIBRARIES
                   and name != "__future__"}
            if bad:
                offenders[path.name] = bad
        assert offenders == {}

    def test_the_check_sees_imports(self) -> None:
        """The import scan finds a known import (so an empty result above means something)."""
        socketio = PACKAGE / "protocols" / "socketio.py"
        assert "supervisor.protocols.base" in imported_modules(socketio)


# --- the layers above the protocols (core) --------------------------------------------

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("records", frozenset({"errors", "messages", "spec", "_supervision", "_lazy"})),
    ("machine", frozenset({"_machine", "_machine_base", "_machine_state", "_machine_io",
                           "_outgoing"})),
    ("transport", frozenset({"_transport", "_streams", "_reports", "_wsclient", "_http",
                             "_frames", "_reactor", "_pollers",
                             "_admission", "_logging", "_futures", "_timer", "_slice", "_runtime",
                             "policy",
                             "chainlit_auth"})),
    ("session actor", frozenset({"_session_actor", "_record", "_callbacks", "_actor_pool"})),
    ("supervisor", frozenset({"_supervisor_actor", "supervisor", "session", "_metrics",
                              "health"})),
)
"""Bottom to top, above ``protocols`` (rank 0); any module not listed is at the top
(cli, loadtest, target, integrations) and may import anything below it."""
TOP = len(LAYERS) + 1
IO_MODULES = frozenset({"threading", "socket", "ssl", "select", "selectors", "logging",
                        "asyncio", "subprocess", "os", "signal"})
"""What no pure layer may import at run time."""
MACHINE_ALSO_FORBIDDEN = frozenset({"time", "random", "uuid"})
"""The machine reads no clock and draws no ids: both are injected."""


def rank(module: str) -> int:
    """The layer of a ``supervisor`` module (0: protocols)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "protocols":
        return 0
    name = parts[1] if len(parts) > 1 else "__init__"
    for number, (_, members) in enumerate(LAYERS, start=1):
        if name in members:
            return number
    return TOP


def runtime_imports(path: Path) -> set[str]:
    """Modules imported at run time (``TYPE_CHECKING`` blocks left out), with
    ``from supervisor import x`` read as ``supervisor.x``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING",
                                                                  "typing.TYPE_CHECKING"}:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "supervisor":
                names.update(f"supervisor.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        modules[".".join(relative.parts).removesuffix(".__init__")] = path
    return modules


class TestLayersAboveProtocols:
    """Each module imports only its own layer and the ones below (``supervisor/__init__.py``)."""

    def test_no_module_imports_a_layer_above_it(self) -> None:
        """An upward import (the machine importing the actor, say) fails here."""
        upward = {}
        for module, path in package_modules().items():
            above = {name for name in runtime_imports(path)
                     if name.startswith("supervisor.") and rank(name) > rank(module)}
            if above:
                upward[module] = above
        assert upward == {}

    def test_the_records_and_the_machine_do_no_io(self) -> None:
        """records and machine import no thread, socket, logging, clock or third party."""
        offenders = {}
        for module, path in package_modules().items():
            layer = rank(module)
            if layer not in (1, 2):
                continue
            forbidden = IO_MODULES | (MACHINE_ALSO_FORBIDDEN if layer == 2 else frozenset())
            bad = {name for name in runtime_imports(path)
                   if name != "__future__" and not name.startswith("supervisor")
                   and (name.split(".")[0] in forbidden
                        or name.split(".")[0] not in sys.stdlib_module_names)}
            if bad:
                offenders[module] = bad
        assert offenders == {}

    def test_every_listed_module_exists(self) -> None:
        """The table names real modules (a rename must update it)."""
        existing = {module.split(".")[-1] for module in package_modules()}
        listed = set().union(*(members for _, members in LAYERS))
        assert listed - existing == set()

    def test_the_scan_reads_from_supervisor_import(self) -> None:
        """``from supervisor import _machine_io as io`` counts as importing that module."""
        assert "supervisor._machine_io" in runtime_imports(PACKAGE / "_machine.py")
        assert "pykka" not in runtime_imports(PACKAGE / "messages.py")
