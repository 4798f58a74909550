"""One configuration as a job: aggregate its members' payloads into scores, score them
with LDS when there is ground truth, report its costs. Body: :mod:`raytda.work.evaluate`.

What it needs (models, adapters, feature jobs, Q) is its ensemble kind's decision
(:meth:`raytda.ensembles.EnsembleKind.jobs`), shared with every configuration that
needs the same artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from raytda.ground_truth import GroundTruth
from raytda.plan.job import Job, KindJobs
from raytda.plan.models import LDSModel
from raytda.specs import LDSSpec, stable_hash

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.ensembles import Ensemble
    from raytda.methods import Method
    from raytda.plan.shards import ShardRule
    from raytda.store import ArtifactStore
    from raytda.task import Task


Truth = LDSSpec | GroundTruth | None

@dataclass(frozen=True, repr=False)
class Evaluate(Job):
    """One ensemble configuration: aggregate member payloads into scores (stored in test
    chunks), score them with LDS when there is ground truth, report costs."""

    task: Task
    method: Method
    ensemble: Ensemble
    lds: Truth
    base_seed: int = 0
    # when members' train sides are built in row shards (how, not what: not in the key)
    shards: ShardRule | None = field(default=None, compare=False)
    kind: str = field(default="result", init=False)

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.evaluate import evaluate

        evaluate(self, store, args)

    accelerated = False

    def __post_init__(self) -> None:
        # proj_dim and features chosen per Task (Method.resolved) before any key is made
        object.__setattr__(self, "method", self.method.resolved(self.task))

    def spec(self) -> dict[str, Any]:
        spec = {"task": self.task.key, "method": self.method.hashed(),
                "ensemble": self.ensemble.to_dict(),
                "lds": None if self.lds is None else self.lds.to_dict(),
                "base_seed": self.base_seed}
        # Its inputs are named by what makes them, not by their keys (a sharded member's
        # jobs differ from a whole one's, the result not), so a job class's revision
        # reaches the result's key here: any raised revision among the jobs it reads.
        revisions = self.input_revisions()
        if revisions:
            spec["revisions"] = revisions
        return spec

    def input_revisions(self) -> dict[str, int]:
        """``{job class: revision}`` of every job it reads, directly or not, whose
        class's revision is not 0."""
        seen: dict[str, Job] = {}
        stack = list(self.deps())
        while stack:
            job = stack.pop()
            if job.key not in seen:
                seen[job.key] = job
                stack.extend(job.deps())
        return {type(j).__name__: j.revision for j in
                sorted(seen.values(), key=lambda j: type(j).__name__) if j.revision}

    def describe(self) -> str:
        return f"evaluate {self.method.name} {self.ensemble.label} on {self.task.name}"

    records_own_cost = False  # its record holds the configuration's costs
    artifacts_written = 2  # the result and (at least) one score chunk

    @property
    def member_count(self) -> int | None:
        """Feature members it aggregates (its work grows with them); None where its kind
        cannot list them here."""
        try:
            return len(self.needs.parts())
        except Exception:  # a kind of one's own that cannot list its jobs: no size
            return None

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return float(n_test * (self.member_count or 1))  # a pass over the test rows a member

    def stored_bytes(self, n_train, n_test, model_bytes):
        return 4 * n_test * n_train + 8 * n_test  # float32 scores, float64 LDS per row

    @cached_property
    def needs(self) -> KindJobs:
        """The jobs this configuration needs, as its kind declares them; each is shared
        with every other configuration that needs the same artifact."""
        return self.ensemble.kind_class.jobs(self)

    def models(self) -> tuple[Job, ...]:
        return self.needs.models

    def adapters(self) -> tuple[Job, ...]:
        return self.needs.adapters

    def blocks(self) -> tuple[Job, ...]:
        return self.needs.features

    def qvalues(self) -> tuple[Job, ...]:
        """The Q jobs it runs (Q read off feature passes is not among them)."""
        return self.needs.q_jobs()

    def lds_models(self) -> tuple[LDSModel, ...]:
        if not isinstance(self.lds, LDSSpec):
            return ()
        return tuple(LDSModel(self.task, self.lds, j, r)
                     for j in range(self.lds.m) for r in range(self.lds.models_per_subset))

    def deps(self) -> tuple[Job, ...]:
        n = self.needs
        return (*n.models, *n.adapters, *n.q_jobs(), *n.features, *self.lds_models())

    def scores_key(self, chunk: int) -> str:
        """Key of chunk ``chunk`` (test rows) of its aggregated scores."""
        return scores_key(self.key, chunk)

    def complete(self, store: ArtifactStore) -> bool:
        """The result and every chunk of its scores are there."""
        return all(store.has(c["key"]) for c in store.meta(self.key).get("score_chunks", ()))


def scores_key(result_key: str, chunk: int) -> str:
    """Key of chunk ``chunk`` (test rows) of a configuration's aggregated scores."""
    return f"scores-{stable_hash([result_key, chunk], 20)}"
