"""The layout as docs/ARCHITECTURE.md draws it: imports go one way, and there is no cycle.

The ``layers`` block of ARCHITECTURE.md lists cnncli's modules top to bottom; a module
may import only from lines below its own, or from inside its own unit (the most specific
entry it belongs to). Every import statement counts, those inside functions too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cnncli"


def documented_layers(text: str | None = None) -> list[list[str]]:
    """The units of each line of the ``layers`` block, bottom line first."""
    text = text if text is not None else (REPO / "docs" / "ARCHITECTURE.md").read_text()
    block = re.search(r"^```layers\n(.*?)^```", text, re.S | re.M).group(1)
    lines = []
    for line in block.splitlines():
        units = []
        for word in line.split():
            if not re.fullmatch(r"cnncli(\.\w+)*", word):
                break  # the rest of the line is its description
            units.append(word)
        if units:
            lines.append(units)
    return lines[::-1]


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The cnncli modules that ``name`` imports: ``from P import N`` counts as the
    module ``P.N`` where that is a module, else as ``P``."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {m for m in found if m == "cnncli" or m.startswith("cnncli.")}


def unit_of(module: str, units: list[str]) -> str:
    matches = [u for u in units if module == u or module.startswith(u + ".")]
    assert matches, f"{module} is in no layer of docs/ARCHITECTURE.md"
    return max(matches, key=len)


def layering_violations(layers: list[list[str]], modules: dict[str, Path]) -> list[str]:
    level = {unit: i for i, line in enumerate(layers) for unit in line}
    units = list(level)
    problems = []
    for name, path in sorted(modules.items()):
        own = unit_of(name, units)
        for target in sorted(imports_of(name, path, modules)):
            if target == "cnncli":
                continue  # the root package: the API facade, loaded before any submodule anyway
            other = unit_of(target, units)
            if other != own and level[other] >= level[own]:
                problems.append(f"{name} ({own}) imports {target} ({other}), which is not below it")
    return problems


def cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: sorted(t for t in imports_of(m, p, modules) if t in modules and t != m) for m, p in modules.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_the_documented_layers():
    modules = module_files()
    layers = documented_layers()
    assert layering_violations(layers, modules) == []
    listed = {u for line in layers for u in line}
    assert all(unit in modules for unit in listed), sorted(listed - set(modules))


def test_there_is_no_import_cycle():
    assert cycles(module_files()) == []


def test_the_engine_imports_nothing_outside_itself():
    modules = module_files()
    outside = {f"{name} imports {target}" for name, path in modules.items() if name.startswith("cnncli.nn")
               for target in imports_of(name, path, modules) if not target.startswith("cnncli.nn")}
    assert outside == set()


def test_the_checks_can_fail(tmp_path):
    """A layer order turned upside down is caught; so is a cycle."""
    modules = module_files()
    upside_down = documented_layers()[::-1]
    assert any("cnncli.config" in v for v in layering_violations(upside_down, modules))
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import cnncli.b\n")
    b.write_text("from cnncli import a\n")
    assert cycles({"cnncli.a": a, "cnncli.b": b}) == [["cnncli.a", "cnncli.b"]]
    with pytest.raises(AssertionError, match="in no layer"):
        unit_of("cnncli.nowhere", ["cnncli.nn"])
