"""Sweep planning: configurations become a DAG of artifact jobs, shared work once."""

from raytda.plan.jobs import Evaluate, Job, LDSModel, MemberBlock, QValues, TrainModel
from raytda.plan.planner import Plan, SweepSpec, make_plan

__all__ = ["Evaluate", "Job", "LDSModel", "MemberBlock", "Plan", "QValues", "SweepSpec",
           "TrainModel", "make_plan"]
