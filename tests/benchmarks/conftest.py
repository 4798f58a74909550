"""Loading a benchmark script as its command line runs it, for the tests beside this file."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def load_benchmark(monkeypatch) -> Callable[[str], ModuleType]:
    """``load_benchmark("bench_scale")`` imports benchmarks/bench_scale.py with benchmarks/
    on sys.path (the scripts import ``common`` from there) and registered in sys.modules
    (dataclasses look their module up there); both are undone after the test."""

    def load(name: str) -> ModuleType:
        monkeypatch.syspath_prepend(str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load
