"""The packages' layout: no import circles in the engine; the server's rooms import each other in
one direction only (docs/architecture.md, "Rooms"); no module of the engine, the server, the SDK
or the benchmarks too long to read in one sitting; the benchmarks use nothing of the tests or of
the SDK's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "styletx"
SERVER = ROOT / "server" / "styletx_server"
CLIENT = ROOT / "client" / "styletx_client"
BENCH = ROOT / "bench"
#: Longest module, in lines, the package may hold.
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE, root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file of every module under `package`, named from `root`."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


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
    for package in (PACKAGE, SERVER, CLIENT, BENCH)
    for path in sorted(package.rglob("*.py"))
}


def test_the_line_limit_covers_the_engine_the_server_the_sdk_and_the_benchmarks() -> None:
    assert "styletx/engine.py" in LIMITED
    assert "server/styletx_server/rpc/servicer.py" in LIMITED
    assert "client/styletx_client/client.py" in LIMITED
    assert "bench/engine_bench.py" in LIMITED


@pytest.mark.parametrize("name", sorted(LIMITED))
def test_no_module_is_over_the_line_limit(name: str) -> None:
    lines = len(LIMITED[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (split it by job)"


# -- the server's rooms ---------------------------------------------------------------------------

#: Each room of `styletx_server` and the rooms it may import (docs/architecture.md, "Rooms").
#: Lower rooms know nothing of higher ones; only `ops` (the assembly) sees every room, and only
#: the entry point (`__main__`) imports `ops`.
ROOMS: dict[str, set[str]] = {
    "errors": set(),
    "observe": set(),
    "security": {"errors", "observe"},
    "intake": {"errors", "observe"},
    "scheduling": {"errors", "observe", "security"},
    "store": {"errors", "observe"},
    "jobs": {"errors", "observe", "security", "intake", "scheduling", "store"},
    "rpc": {"errors", "observe", "security", "intake", "scheduling", "jobs", "store"},
    "ops": {"errors", "observe", "security", "intake", "scheduling", "jobs", "rpc", "store"},
    "__main__": {"observe", "ops"},
}


def room_of(module: str) -> str | None:
    """The room a `styletx_server` module lives in (None for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def server_graph() -> dict[str, set[str]]:
    found = modules(SERVER, SERVER.parent)
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def room_edges(graph: dict[str, set[str]]) -> set[tuple[str, str, str, str]]:
    """(room, imported room, module, imported module) for every import across rooms."""
    edges = set()
    for module, targets in graph.items():
        for target in targets:
            here, there = room_of(module), room_of(target)
            if here is not None and there is not None and here != there:
                edges.add((here, there, module, target))
    return edges


def test_every_server_module_lives_in_a_known_room() -> None:
    for module in server_graph():
        room = room_of(module)
        assert room is None or room in ROOMS, f"{module}: room {room!r} unknown"


def test_the_room_rules_see_a_wrong_direction() -> None:
    graph = {
        "styletx_server.jobs.job": {"styletx_server.rpc.relay"},
        "styletx_server.rpc.relay": {"styletx_server.jobs.job"},
    }
    wrong = [e for e in room_edges(graph) if e[1] not in ROOMS[e[0]]]
    assert [(here, there) for here, there, *_ in wrong] == [("jobs", "rpc")]


def test_the_server_rooms_import_in_one_direction_only() -> None:
    wrong = sorted(
        f"{module} imports {target} ({here} may not use {there})"
        for here, there, module, target in room_edges(server_graph())
        if there not in ROOMS[here]
    )
    assert wrong == [], "\n".join(wrong)


def test_nothing_imports_the_assembly_but_the_entry_point() -> None:
    importers = sorted(
        module
        for module, targets in server_graph().items()
        if any(room_of(t) == "ops" for t in targets) and room_of(module) not in {"ops", "__main__"}
    )
    assert importers == []


def test_the_server_imports_nothing_of_the_sdk() -> None:
    for path in SERVER.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                assert not any(n.startswith("styletx_client") for n in names), path


# -- the benchmarks -----------------------------------------------------------------------------


def imports_of(path: Path) -> set[str]:
    """Absolute module names `path` imports (`from a import b` gives `a` and `a.b`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def private_or_test(name: str) -> bool:
    """A test module, or a private module of the SDK (`styletx_client._x`)."""
    parts = name.split(".")
    if parts[0] == "tests":
        return True
    return parts[0] == "styletx_client" and any(p.startswith("_") for p in parts[1:])


def test_the_benchmark_rule_sees_tests_and_private_sdk_modules() -> None:
    assert private_or_test("tests.support.weights")
    assert private_or_test("styletx_client._core")
    assert not private_or_test("styletx_client.errors")
    assert not private_or_test("styletx.engine")


@pytest.mark.parametrize("path", sorted(BENCH.rglob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_neither_tests_nor_private_sdk_modules(path: Path) -> None:
    used = sorted(name for name in imports_of(path) if private_or_test(name))
    assert used == [], f"{path.relative_to(ROOT)} imports {used}"
