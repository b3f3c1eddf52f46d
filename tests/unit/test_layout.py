"""The packages' layout: no import circles in the engine, no module of the engine or the server
too long to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "styletx"
SERVER = ROOT / "server" / "styletx_server"
#: Longest module, in lines, the package may hold.
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package `name` imports anywhere: at the top, in functions, under
    TYPE_CHECKING; `from a import b` counts as importing `a.b` where that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return (found & known) - {name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (as the path round it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports_of_every_kind() -> None:
    graph = import_graph()
    assert "styletx.pool" in graph and "styletx.engine" in graph["styletx.pool"]
    assert "styletx.backends.base" in graph["styletx.batcher"]  # under TYPE_CHECKING
    assert "styletx.weights_file" in graph["styletx.vgg"]  # inside a function


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_engine_package_has_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


LIMITED = {
    str(path.relative_to(ROOT)): path
    for package in (PACKAGE, SERVER)
    for path in sorted(package.rglob("*.py"))
}


def test_the_line_limit_covers_the_engine_and_the_server() -> None:
    assert "styletx/engine.py" in LIMITED
    assert "server/styletx_server/rpc/servicer.py" in LIMITED


@pytest.mark.parametrize("name", sorted(LIMITED))
def test_no_module_is_over_the_line_limit(name: str) -> None:
    lines = len(LIMITED[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (split it by job)"
