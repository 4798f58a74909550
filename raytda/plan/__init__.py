"""Sweep planning: configurations become a DAG of artifact jobs, shared work once.

The job protocol is :mod:`raytda.plan.job` (a leaf); the jobs live beside what owns them
(:mod:`~raytda.plan.models`, :mod:`~raytda.plan.members`, :mod:`~raytda.plan.evaluate`,
the kinds, methods and feature parts that declare their own). Names here load on first
use, so importing one job module never imports the planner (nor the kinds it reads).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raytda.plan.evaluate import Evaluate
    from raytda.plan.job import Job
    from raytda.plan.members import MemberBlock, QValues
    from raytda.plan.models import LDSModel, TrainModel
    from raytda.plan.planner import Plan, SweepSpec, make_plan

_WHERE = {"Evaluate": "evaluate", "Job": "job", "MemberBlock": "members", "QValues": "members",
          "LDSModel": "models", "TrainModel": "models", "Plan": "planner",
          "SweepSpec": "planner", "make_plan": "planner"}

__all__ = ["Evaluate", "Job", "LDSModel", "MemberBlock", "Plan", "QValues", "SweepSpec",
           "TrainModel", "make_plan"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'raytda.plan' has no attribute {name!r}")
    return getattr(importlib.import_module(f"raytda.plan.{_WHERE[name]}"), name)
