"""The house has no circles: no module of rs3l imports (directly or through others) itself.

The import graph is read from the source with ``ast`` (every ``import``, also inside functions;
relative imports resolved; ``from package import module`` is an import of that module). Importing
``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so those count as imported too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_graph(package: str = "rs3l", root: Path = SRC) -> dict[str, set[str]]:
    """{module: modules of ``package`` it imports}, from every import statement in its source."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                targets.add(source)
                targets.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in files)
        graph[name] = {t for target in targets for t in _with_parents(target) if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): each is a circle of imports."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def shortest_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest path from the circle's first module back to itself, inside the circle."""
    start = min(comp)
    paths, frontier = {start: [start]}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(comp)} is not strongly connected")


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line per circle: a shortest cycle, then every module of the circle."""
    return [f"{' -> '.join(shortest_cycle(graph, comp))}   (circle: {', '.join(sorted(comp))})"
            for comp in circles(graph)]


def test_rs3l_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/rs3l:\n" + "\n".join(cycles)


def test_the_configuration_core_imports_no_stage():
    """config.py sits at the bottom: nothing it imports, directly or not, is a stage module. (It reads
    ALGORITHM_VERSION from the package marker rs3l/physics/__init__.py, which imports nothing.)"""
    graph = import_graph()
    below, todo = set(), ["rs3l.config"]
    while todo:
        for m in graph[todo.pop()] - below:
            below.add(m)
            todo.append(m)
    stages = ("rs3l.physics.", "rs3l.training.", "rs3l.evaluation.", "rs3l.models.", "rs3l.data.")
    assert not sorted(m for m in below if m.startswith(stages)), sorted(below)


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    """The walker itself: a cycle made only by a function-level relative import is found and printed."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    return a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph("pkg", tmp_path)
    assert graph["pkg.sub.b"] == {"pkg", "pkg.a"}
    assert find_cycles(graph) == ["pkg.a -> pkg.sub.b -> pkg.a   (circle: pkg.a, pkg.sub.b)"]
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycles(import_graph("pkg", tmp_path)) == []


if __name__ == "__main__":  # python tests/test_imports.py: print the cycles
    print("\n".join(find_cycles(import_graph())))
    pytest.main([__file__, "-q"])
