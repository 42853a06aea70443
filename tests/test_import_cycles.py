"""No import cycles among the project's modules.

The import graph is read from the source with `ast` (nothing is imported): every `import` and
`from ... import` of a project module counts, at the top of a module, inside a function and
under `if TYPE_CHECKING:` alike, since each is a dependency a reader has to follow. A cycle is
a strongly connected component of more than one module (or a module importing itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("acd", "replication", "sim", "loadtest", "bench")
# The packages whose modules must take part in no cycle.
CHECKED = ("acd", "replication", "sim", "loadtest", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _type_only(tree: ast.Module) -> set[int]:
    """The ids of the import statements under `if TYPE_CHECKING:` (names for type hints only)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return found


def import_graph(type_hints: bool = True) -> dict[str, set[str]]:
    """module -> the project modules it imports (with `type_hints=False`, leaving out the imports
    under `if TYPE_CHECKING:`, which never run)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped = set() if type_hints else _type_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from package import module` imports the module; `from module import name`, the module.
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
                elif target == name:
                    graph[name].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))
    return found


def _checked(module: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in CHECKED)


# The routing core is one class (`acd.core.center.Center`) split by concept: its handler modules
# name `Center` in their type hints (under TYPE_CHECKING) and `Center` puts them in its tables.
# Those references run one way at run time; the core is checked without its type-hint imports.
TYPE_HINT_CYCLES_ALLOWED = ("acd.core",)


def _allowed(module: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in TYPE_HINT_CYCLES_ALLOWED)


def test_no_import_cycle_among_the_checked_modules() -> None:
    found = [component for component in cycles(import_graph()) if any(_checked(module) for module in component)
             and not all(_allowed(module) for module in component)]
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(component) for component in found)


def test_no_import_cycle_that_runs_not_even_in_the_core() -> None:
    found = [component for component in cycles(import_graph(type_hints=False)) if any(_checked(module) for module in component)]
    assert found == [], "import cycles at run time: " + "; ".join(" <-> ".join(component) for component in found)


def test_type_hint_imports_can_be_left_out() -> None:
    assert "acd.node.node" in import_graph()["acd.api.metrics"]
    assert "acd.node.node" not in import_graph(type_hints=False)["acd.api.metrics"]


def test_a_cycle_is_found_and_a_chain_is_not() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"a"}}) == [["a"]]


def test_the_graph_sees_imports_at_every_level() -> None:
    real = import_graph()
    assert "acd.api.openapi" in real["acd.api.app"], "a module-level import is an edge"
    assert "acd.server" in real["acd.cli"], "an import inside a function is an edge"
    assert "acd.node.node" in real["acd.api.metrics"], "an import under TYPE_CHECKING is an edge"
