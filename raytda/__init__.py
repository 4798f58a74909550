"""raytda: training data attribution with efficient ensembles, orchestrated by Ray.

The public API is importable from here (``from raytda import Sweep, Ensemble``). Heavy
modules (torch, Ray) load on first use of a name, so ``import raytda`` stays fast;
``__all__`` and ``dir(raytda)`` list every name, and type checkers see them through the
``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raytda.version import __version__

if TYPE_CHECKING:  # the lazy names' definitions, for type checkers and IDEs
    from raytda.api import Sweep
    from raytda.attributor import Attributor
    from raytda.core.args import ComputeArgs
    from raytda.core.outputs import ModelOutput
    from raytda.ensembles import Ensemble, EnsembleKind, register_ensemble
    from raytda.ground_truth import GroundTruth
    from raytda.methods import AttributionMethod, Method, register_method
    from raytda.plan.planner import SweepSpec
    from raytda.specs import LDSSpec, LoRASpec, Recipe, SpecError
    from raytda.store import ArtifactStore
    from raytda.task import Task
    from raytda.tasks import get_task, register_task

#: public name -> the module that defines it (imported on first use)
_LAZY = {
    "Sweep": "raytda.api",
    "SweepSpec": "raytda.plan.planner",
    "Task": "raytda.task",
    "Attributor": "raytda.attributor",
    "GroundTruth": "raytda.ground_truth",
    "Ensemble": "raytda.ensembles",
    "EnsembleKind": "raytda.ensembles",
    "Method": "raytda.methods",
    "AttributionMethod": "raytda.methods",
    "LDSSpec": "raytda.specs",
    "LoRASpec": "raytda.specs",
    "Recipe": "raytda.specs",
    "SpecError": "raytda.specs",
    "ModelOutput": "raytda.core.outputs",
    "register_method": "raytda.methods",
    "register_ensemble": "raytda.ensembles",
    "register_task": "raytda.tasks",
    "get_task": "raytda.tasks",
    "ArtifactStore": "raytda.store",
    "ComputeArgs": "raytda.core.args",
}

# Written out (not built from _LAZY) because type checkers and linters read it literally;
# tests/test_public_api.py checks that it, _LAZY and the TYPE_CHECKING imports agree.
__all__ = [
    "__version__",
    "Sweep", "SweepSpec", "Task", "Attributor", "GroundTruth",
    "Ensemble", "EnsembleKind", "Method", "AttributionMethod",
    "LDSSpec", "LoRASpec", "Recipe", "SpecError", "ModelOutput",
    "register_method", "register_ensemble", "register_task", "get_task",
    "ArtifactStore", "ComputeArgs",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'raytda' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too (a module's default dir() lists only what is loaded), with the
    # submodules and dunders already in the namespace.
    return sorted({*globals(), *__all__})
