"""The package's import graph has no circles, read from the source with `ast`.

A circle between two modules means neither can be understood (or imported, or tested) without
the other, and Python only tolerates one while the names are bound in a lucky order. Every
`import` and `from ... import` inside `gradscope/` and `cli/` counts, at module level and
inside functions alike (a lazy import only postpones the circle to the first call). Imports
under `if TYPE_CHECKING:` are left out: they never run, and an annotation naming a type is not
a dependency of the code's behaviour.

Edges go to the module named, never implicitly to its parent packages: importing
`gradscope.record` runs `gradscope/__init__.py` first, but that is Python's loading order, not
a dependency of `record` on the public API.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"gradscope": ROOT / "gradscope", "gradscope_cli": ROOT / "cli"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the two packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    nodes: list[ast.Import | ast.ImportFrom] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if _is_type_checking_block(node):
            pending.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            nodes.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from` statement reads from."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _resolve(name, path, node)
                # `from pkg import sub` names the submodule `pkg.sub`; otherwise the name lives in `pkg`
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports (first module repeated at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    # module-level, relative and function-level imports are all found
    assert "gradscope.record" in graph["gradscope.capture.watcher"]
    assert "gradscope.statdefs" in graph["gradscope.record"]
    assert any(targets for name, targets in graph.items() if name.startswith("gradscope_cli"))


def test_find_cycle_reports_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    assert find_cycle(room_graph({"p.a.x": {"p.b.y"}, "p.b.y": {"p.a.z"}, "p.a.z": set()})) == ["p.a", "p.b", "p.a"]


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between rooms: a subpackage (`gradscope.report`) or a top-level module."""

    def room(module: str) -> str:
        return ".".join(module.split(".")[:2])

    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        rooms.setdefault(room(name), set()).update(room(t) for t in targets if room(t) != room(name))
    return rooms


def test_no_circles_between_rooms() -> None:
    """Data flows one way between subpackages too: `sweep` may be read by `report`, never the
    reverse, even when no two single modules import each other."""
    cycle = find_cycle(room_graph(import_graph()))
    assert not cycle, "import circle between rooms: " + " -> ".join(cycle)


def test_diagnosis_never_imports_torch_side_modules() -> None:
    """Rules read records, so diagnosing a saved run needs no torch-side module of gradscope."""
    torch_side = {"gradscope.model_tree", "gradscope.measure", "gradscope.distributed"} | {
        m for m in import_graph() if m.startswith("gradscope.capture")
    }
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("gradscope.diagnose"):
            assert not targets & torch_side, f"{name} imports {sorted(targets & torch_side)}"
