"""The package's shape: modules grouped by layer, imports only downward, no import circle.

Every `import` and `from ... import` of a lossbench module is read with `ast`, including the ones inside
functions (a lazy import is still a dependency). LAYERS is the declared order, lowest first: a module may import
from its own layer or a lower one, never a higher one; and the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lossbench"
# lowest first; a layer is a sub-package of lossbench/ or a top-level module
LAYERS = [
    {"errors", "store", "values"},  # user-facing errors, atomic and untrusted files, ranges of values
    {"losses"},
    {"config"},
    {"data", "models", "metrics"},
    {"runs"},
    {"engine"},
    {"sweeps"},
    {"analysis"},
    {"tools"},
    {"__init__", "__main__", "bench", "check", "compare", "doctor", "report", "studies", "tune"},  # the commands
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The lossbench modules `path` imports (a name imported from a package is the submodule if one exists)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "lossbench"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lossbench":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports(p, known) - {m} for m, p in mods.items()}


def test_every_module_has_a_layer():
    assert {layer(m) for m in modules()} <= set(RANK), {layer(m) for m in modules()} - set(RANK)


def test_no_import_runs_back_up():
    up = [f"{m} -> {d}" for m, deps in graph().items() for d in deps
          if d != "lossbench" and RANK[layer(d)] > RANK[layer(m)]]
    assert not up, "imports from a higher layer:\n" + "\n".join(sorted(up))


def test_only_the_commands_import_the_package_root():
    """`import lossbench` / `from lossbench import x` for a non-module x reach the root's __init__ (the top)."""
    bad = [m for m, deps in graph().items() if "lossbench" in deps and RANK[layer(m)] < RANK["__init__"]]
    assert not bad, bad


def test_no_import_circle():
    g, state, path, cycles = graph(), {}, [], []

    def visit(m: str) -> None:
        state[m] = "open"
        path.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d)
        path.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_function_over_80_lines(module):
    tree = ast.parse(modules()[module].read_text())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, f"{module}: {long}"
