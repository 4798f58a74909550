"""raytda: training data attribution with efficient ensembles, orchestrated by Ray.

Heavy modules (torch, Ray) load on first use so ``import raytda`` stays fast.
"""

from __future__ import annotations

from typing import Any

from raytda.version import __version__

_LAZY = {
    "Sweep": "raytda.api",
    "SweepSpec": "raytda.plan.planner",
    "Setting": "raytda.specs",
    "Ensemble": "raytda.specs",
    "Method": "raytda.specs",
    "LDSSpec": "raytda.specs",
    "Recipe": "raytda.specs",
    "get_setting": "raytda.settings",
    "ArtifactStore": "raytda.store",
    "ComputeArgs": "raytda.core.args",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raytda' has no attribute {name!r}")
