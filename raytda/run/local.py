"""The in-process executor: runs a plan's jobs one after another in this process.

Jobs run through the same :class:`~raytda.run.worker.JobRunner` as on Ray's actors: torch
threads equal the job's CPU reservation (1), and each artifact records what it was
measured on, so costs measured here and on Ray mean the same.
"""

from __future__ import annotations

import logging

from raytda.core.args import ComputeArgs
from raytda.errors import RaytdaError
from raytda.plan.jobs import Job
from raytda.plan.planner import Plan
from raytda.run.worker import JobRunner
from raytda.store import ArtifactStore, CorruptArtifact

log = logging.getLogger(__name__)


class JobFailed(RaytdaError, RuntimeError):
    """Some jobs failed after their retries; everything else that could run has run."""


def run_job_with_repair(job: Job, store: ArtifactStore, args: ComputeArgs,
                        by_key: dict[str, Job], depth: int = 0,
                        runner: JobRunner | None = None) -> None:
    """Run ``job``; if an input turns out corrupt, rebuild it and try again."""
    runner = runner or JobRunner()
    for _ in range(3):
        try:
            runner.run(job, store, args)
            return
        except CorruptArtifact as e:
            log.warning("%s", e)
            producer = by_key.get(e.key) or next((d for d in job.deps() if d.key == e.key), None)
            if producer is None or depth > 8:
                raise
            run_job_with_repair(producer, store, args, by_key, depth + 1, runner)
    runner.run(job, store, args)


class InProcessExecutor:
    """Runs jobs serially in dependency order; for tests and small local sweeps."""

    name = "local"

    def __init__(self, args: ComputeArgs | None = None, progress: bool = True) -> None:
        self.args = args or ComputeArgs()
        self.progress = progress
        self.runner = JobRunner("local")  # kept across plans: cached models, load counts

    def execute(self, plan: Plan, store: ArtifactStore) -> None:
        todo = plan.todo
        by_key = {j.key: j for j in plan.jobs}
        bar = None
        try:
            if self.progress and todo:
                from tqdm.auto import tqdm
                bar = tqdm(total=len(todo), desc="raytda jobs", unit="job")
            for job in todo:
                if bar is not None:
                    bar.set_postfix_str(job.describe()[:40])
                if not store.has(job.key):
                    run_job_with_repair(job, store, self.args, by_key, runner=self.runner)
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:  # ends the bar's line, so that an error starts its own
                bar.close()


def run_plan(plan: Plan, store: ArtifactStore, executor=None) -> None:
    (executor or InProcessExecutor()).execute(plan, store)
