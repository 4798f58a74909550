"""Executors: run a plan's jobs in-process or on Ray (Ray is imported only there)."""

from raytda.run.local import InProcessExecutor

__all__ = ["InProcessExecutor"]
