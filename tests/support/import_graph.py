"""The package's import graph, read from the source (nothing is imported): which chatapp module
imports which, and which third-party packages each imports. tests/test_layers.py checks the layers
with it; scripts/import_graph.py draws it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "chatapp"


@dataclass
class Module:
    name: str  # dotted, e.g. "chatapp.web.chat"
    path: Path
    imports: set[str] = field(default_factory=set)  # chatapp modules imported at run time
    type_only: set[str] = field(default_factory=set)  # chatapp modules imported for type checking only
    external: set[str] = field(default_factory=set)  # top-level names of other packages


def modules(package: Path = PACKAGE) -> dict[str, Module]:
    """Every module of the package, with what it imports."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = Module(name, path)
    for module in found.values():
        _read_imports(module, found)
    return found


def _read_imports(module: Module, known: dict[str, Module]) -> None:
    tree = ast.parse(module.path.read_text(), str(module.path))
    is_package = module.path.name == "__init__.py"
    here = module.name if is_package else module.name.rpartition(".")[0]
    for node, type_only in _imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from package import module` imports the module; `from module import name`, the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            if target.split(".")[0] == "chatapp":
                while target not in known:  # chatapp.llm.Usage → chatapp.llm
                    target = target.rpartition(".")[0]
                if target != module.name:
                    (module.type_only if type_only else module.imports).add(target)
            elif target.split(".")[0] != "__future__":
                module.external.add(target.split(".")[0])


def _imports(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, with whether it sits under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
        else:
            yield from _imports(node, type_only)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def cycles(graph: dict[str, Module]) -> list[list[str]]:
    """Each import circle among the modules (run-time imports), as the list of modules around it."""
    found: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name].imports):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def importers(graph: dict[str, Module], external: str) -> set[str]:
    """The modules that import the third-party package `external` themselves."""
    return {name for name, module in graph.items() if external in module.external}
