"""The package's public face: names that dir(), IDEs and type checkers see, a light
``import raytda``, the PEP 561 marker, the license and the extras."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import raytda

PACKAGE = Path(raytda.__file__).parent
ROOT = PACKAGE.parent
PUBLIC = ("Sweep", "SweepSpec", "Task", "Attributor", "Method", "Ensemble", "LDSSpec",
          "GroundTruth", "Recipe", "LoRASpec", "ModelOutput", "register_method",
          "register_ensemble", "register_task", "get_task", "ComputeArgs",
          "ArtifactStore", "SpecError", "EnsembleKind", "AttributionMethod", "__version__")


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_dir_and_all_list_the_public_api_and_each_name_resolves():
    assert set(PUBLIC) <= set(dir(raytda))
    assert set(PUBLIC) == set(raytda.__all__)
    for name in raytda.__all__:
        assert getattr(raytda, name) is not None
    assert raytda.Ensemble is __import__("raytda.ensembles").ensembles.Ensemble


def test_type_checkers_see_what_the_lazy_names_resolve_to():
    """The TYPE_CHECKING imports of __init__.py name the same module for each name as the
    lazy table does, and cover __all__."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and ast.unparse(n.test) == "TYPE_CHECKING")
    static = {a.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
              for a in node.names}
    assert static == raytda._LAZY
    assert set(static) | {"__version__"} == set(raytda.__all__)


def test_import_raytda_loads_neither_torch_nor_ray():
    code = "import sys, raytda; dir(raytda); print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"


def test_the_package_is_typed_and_ships_the_marker():
    assert (PACKAGE / "py.typed").is_file()
    project = pyproject()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["raytda"]


def test_license_is_the_apache_2_text_pyproject_names():
    project = pyproject()["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_each_extra_adds_something_the_core_does_not():
    """An extra that repeats a core dependency with no tighter bound means nothing."""
    project = pyproject()["project"]

    def name(req: str) -> str:
        return req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()

    core = {name(r): r for r in project["dependencies"]}
    for extra, reqs in project["optional-dependencies"].items():
        for r in reqs:
            bound = r.split(";")[0][len(name(r)):]
            assert name(r) not in core or (bound and r != core[name(r)]), (extra, r)
