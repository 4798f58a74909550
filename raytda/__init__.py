"""raytda: training data attribution with efficient ensembles, orchestrated by Ray.

Heavy modules (torch, Ray) load on first use so ``import raytda`` stays fast.
"""

from __future__ import annotations

from typing import Any

from raytda.version import __version__

_LAZY = {
    "Sweep": "raytda.api",
    "SweepSpec": "raytda.plan.planner",
    "Task": "raytda.task",
    "Attributor": "raytda.attributor",
    "GroundTruth": "raytda.ground_truth",
    "Setting": "raytda.specs",
    "Ensemble": "raytda.ensembles",
    "Method": "raytda.methods",
    "LDSSpec": "raytda.specs",
    "LoRASpec": "raytda.specs",
    "Recipe": "raytda.specs",
    "ModelOutput": "raytda.core.outputs",
    "register_method": "raytda.methods",
    "register_ensemble": "raytda.ensembles",
    "get_setting": "raytda.settings",
    "get_task": "raytda.tasks",
    "ArtifactStore": "raytda.store",
    "ComputeArgs": "raytda.core.args",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raytda' has no attribute {name!r}")
