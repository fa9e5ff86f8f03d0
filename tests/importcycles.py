"""Fail when fleet's modules import each other in a cycle.

Reads every ``import`` and ``from ... import`` in ``fleet/`` with :mod:`ast`,
at any depth (function-level imports and ``if TYPE_CHECKING:`` blocks
count: a cycle hidden inside a function is still a cycle), resolves relative
imports, and takes ``from package import name`` to mean the submodule when
there is one.  Prints each cycle (one per strongly connected group of
modules, with a shortest loop through it) and exits 1; prints nothing and
exits 0 when there is none.

Usage: ``python tests/importcycles.py [PACKAGE_DIR]`` (default: ``fleet``
beside this file's folder).
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module under the package folder ``root``."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` (file ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in known else source)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest loop through each strongly connected group of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return [_shortest_loop(graph, group) for group in sorted(groups, key=min)]


def _shortest_loop(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    best: list[str] = []
    for start in sorted(group):
        came: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for child in sorted(graph[node] & group):
                if child == start:
                    loop = [node]
                    while loop[-1] != start:
                        loop.append(came[loop[-1]])
                    loop = [start, *reversed(loop[:-1]), start] if len(loop) > 1 else [start, start]
                    if not best or len(loop) < len(best):
                        best = loop
                    queue.clear()
                    break
                if child not in came:
                    came[child] = node
                    queue.append(child)
    return best


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "fleet"
    known = module_names(root)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    found = cycles(graph)
    for loop in found:
        print("import cycle: " + " -> ".join(loop))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
