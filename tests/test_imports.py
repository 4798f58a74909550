"""The package's import graph: no cycles between modules, at import time or in the lazy
(function-level) imports that break cycles only by hiding them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import raytda

ROOT = Path(raytda.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, modules: set[str], include_lazy: bool) -> set[str]:
    """raytda modules imported by a module (``TYPE_CHECKING`` blocks never count)."""
    out: set[str] = set()

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and (include_lazy or not lazy):
                names = ([a.name for a in child.names] if isinstance(child, ast.Import) else
                         [child.module] + [f"{child.module}.{a.name}" for a in child.names])
                out.update(n for n in names if n in modules)
            visit(child, inner)

    visit(tree, False)
    return out


def graph(include_lazy: bool) -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    g = {}
    for name, path in files.items():
        deps = imports(ast.parse(path.read_text()), set(files), include_lazy)
        # A package importing its own submodules (re-exports, registries) is not a cycle.
        g[name] = {d for d in deps if d != name and not d.startswith(name + ".")}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def dfs(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                dfs(d)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            dfs(n)
    return found


def test_no_import_cycles_at_import_time():
    assert cycles(graph(include_lazy=False)) == []


def test_no_import_cycles_through_lazy_imports_either():
    assert cycles(graph(include_lazy=True)) == []


def test_named_cycles_are_gone_even_through_lazy_imports():
    g = graph(include_lazy=True)
    assert "raytda.data.mnist" not in g["raytda.data.base"]
    assert not any(d.startswith("raytda.data.") and d != "raytda.data.samples"
                   for d in g["raytda.data.base"])
    assert not any(d == "raytda.api" for m, ds in g.items() if m.startswith("raytda.run")
                   for d in ds)
    assert not any(c for c in cycles(g) if "raytda.api" in c)


@pytest.mark.parametrize("first, then", [("raytda.ensembles", "raytda.plan.planner"),
                                         ("raytda.plan.planner", "raytda.ensembles"),
                                         ("raytda.plan.job", "raytda.ensembles.lora"),
                                         ("raytda.ensembles.lora", "raytda.plan.evaluate")])
def test_kinds_and_jobs_import_in_either_order(first, then):
    # a fresh interpreter each: the order of first imports is what a circle breaks
    code = (f"import {first}, {then}, sys; from raytda.ensembles import ENSEMBLES; "
            f"assert 'lora' in ENSEMBLES and 'dropout-forward-shared' in ENSEMBLES; "
            f"assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


def test_the_job_protocol_is_a_leaf():
    # plan/job.py imports no job, kind, method or feature module (annotations aside)
    g = graph(include_lazy=True)
    assert g["raytda.plan.job"] <= {"raytda.specs"}
    assert not any("isort: off" in p.read_text() for p in ROOT.rglob("*.py"))
