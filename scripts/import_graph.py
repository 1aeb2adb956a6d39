"""Print the import graph of the ``gradadvisor`` package and check its shape.

Reads every module's source (nothing is imported, so TensorFlow is never
loaded) and records every import of another gradadvisor module, including the
lazy ones inside functions: a lazy import still ties two modules together, and
a cycle of lazy imports is a cycle a newcomer has to untangle.

It fails (exit 1) on:

* a cycle between modules;
* a cycle between subpackages (``analysis`` importing ``report`` while
  ``report`` imports ``analysis``, say), except through the top-level
  ``gradadvisor`` package itself, which re-exports the public API;
* a ``_private`` name imported from another subpackage.

One edge against the stages' direction is allowed, and named in
:data:`ALLOWED_BACK_EDGES`: ``Diagnosis.to_text``, ``save_html`` and
``_repr_html_`` (a fixed public contract) render through ``report`` with a
lazy import, while ``report`` reads signal descriptions from ``analysis``.

Usage, from a checkout::

    python scripts/import_graph.py            # the subpackage graph and the verdict
    python scripts/import_graph.py --modules  # every module's imports as well
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "gradadvisor"
#: Subpackage edges against the data flow that are there on purpose, with why.
ALLOWED_BACK_EDGES = {
    ("analysis", "report"): "Diagnosis's public renderers (to_text, save_html, _repr_html_) call the report",
}


def module_names(root: Path) -> dict:
    """``{dotted module name: path}`` of every module under ``root/gradadvisor``."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, known: dict) -> list:
    """``[(imported module, imported names)]`` for every gradadvisor import in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names if alias.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node.level, node.module)
            if source.split(".")[0] != PACKAGE:
                continue
            plain = []
            for alias in node.names:
                # ``from . import report`` imports a module, not a name.
                if f"{source}.{alias.name}" in known:
                    found.append((f"{source}.{alias.name}", ()))
                else:
                    plain.append(alias.name)
            if plain:
                found.append((source, tuple(plain)))
    return found


def subpackage(module: str) -> str:
    """``gradadvisor.search.tuner`` -> ``search``; a top-level module is its own group."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def analyse(root: Path = ROOT) -> dict:
    """The module graph, the subpackage graph and every problem found."""
    known = module_names(root)
    modules, groups, private = {}, {}, []
    for module, path in known.items():
        edges = set()
        for target, names in imports_of(module, path, known):
            if target == module or target not in known:
                continue
            edges.add(target)
            source_group, target_group = subpackage(module), subpackage(target)
            if source_group != target_group:
                if (PACKAGE not in (source_group, target_group)
                        and (source_group, target_group) not in ALLOWED_BACK_EDGES):
                    groups.setdefault(source_group, set()).add(target_group)
                private += [f"{module} imports {name} from {target}"
                            for name in names if name.startswith("_") and not name.startswith("__")]
        modules[module] = edges
    return {"modules": modules, "groups": groups, "module_cycles": cycles(modules),
            "group_cycles": cycles(groups), "private": private}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", action="store_true", help="also print every module's imports")
    args = parser.parse_args(argv)
    result = analyse()
    if args.modules:
        for module, edges in sorted(result["modules"].items()):
            print(f"{module} -> {', '.join(sorted(edges)) or '(nothing)'}")
        print()
    for group, edges in sorted(result["groups"].items()):
        print(f"{group} -> {', '.join(sorted(edges))}")
    problems = ([f"module cycle: {' <-> '.join(c)}" for c in result["module_cycles"]]
                + [f"subpackage cycle: {' <-> '.join(c)}" for c in result["group_cycles"]]
                + [f"private import: {line}" for line in result["private"]])
    print()
    for line in problems:
        print(line)
    print(f"{len(result['modules'])} modules, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
