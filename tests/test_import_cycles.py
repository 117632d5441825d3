"""No import circle in src/swarm: the module-level ``swarm.*`` imports form a DAG.

Each module's AST is walked for the imports that run when it is imported (module level,
including ``try``/``if`` blocks, but not the bodies of functions or of
``if TYPE_CHECKING:``); ``from swarm.a import b`` counts as an import of ``swarm.a.b``
when that is a module, else of ``swarm.a``. Any cycle of that graph fails the test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import swarm

SRC = Path(swarm.__file__).resolve().parent


def _module_names(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run at import time (no function bodies, no TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _runtime_imports(node.body)
            yield from _runtime_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _runtime_imports(block)
        elif isinstance(node, ast.With):
            yield from _runtime_imports(node.body)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]
) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    out: set[str] = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            out.add(sub)
        elif base in known:
            out.add(base)
    return out


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the swarm modules it imports at module level."""
    known = _module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _runtime_imports(tree.body):
            edges |= _targets(node, name, path.name == "__init__.py", known)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
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
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_src_has_no_import_cycle() -> None:
    """The module-level imports of every src/swarm module form no cycle."""
    graph = import_graph()
    assert "swarm.proposers.registry" in graph and len(graph) > 40
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in src/swarm:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_proposer_base_imports_no_implementation() -> None:
    """proposers/base.py imports none of the proposer implementations, even lazily."""
    tree = ast.parse((SRC / "proposers" / "base.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    impls = {
        f"swarm.proposers.{m}"
        for m in ("search", "hypotheses", "llm", "agent", "fallback", "registry")
    }
    assert not imported & impls


@pytest.mark.parametrize(
    "body, expect",
    [
        ("from swarm.b import x\n", [("swarm.a", "swarm.b")]),
        ("from . import b\n", [("swarm.a", "swarm.b")]),
        ("def f():\n    import swarm.b\n", []),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from swarm import b\n", []),
        ("try:\n    import swarm.b\nexcept ImportError:\n    pass\n", [("swarm.a", "swarm.b")]),
    ],
)
def test_cycle_finder_on_a_planted_package(
    tmp_path: Path, body: str, expect: list[tuple[str, str]]
) -> None:
    """The finder reports a planted a <-> b circle only when the import runs at import time."""
    pkg = tmp_path / "swarm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(body)
    (pkg / "b.py").write_text("import swarm.a\n")
    assert find_cycles(import_graph(pkg)) == expect
