"""The job protocol: what an artifact job is, and what a configuration's jobs are.

A job is a pure function of its spec and its input artifacts: it knows its content key
(a hash of everything that determines its output and of its class's ``revision``,
computed once per job), the jobs it depends on, the resources it wants and its traits,
which the executors read instead of its name: ``accelerated`` (a GPU share speeds it up),
``holds_model`` (its artifact is model weights that later jobs read), ``affinity()``
(the model it should run next to) and ``costed`` (its time is a configuration's cost).

This module is a leaf: it imports no job, kind, method or torch. The concrete jobs live
beside what owns them (:mod:`raytda.plan.models`: trained and imported models and LDS
models; :mod:`raytda.plan.members`: a member's Q and payload; :mod:`raytda.plan.evaluate`:
one configuration; the LoRA kind's base models and adapters in
:mod:`raytda.ensembles.lora`; a kind's, method's or feature part's own jobs in its file),
and each runs its body, in :mod:`raytda.work`, by calling it from ``run`` (imported there,
so planning a sweep imports no torch).

Keys and revisions. A key hashes the job's ``kind``, its ``spec()`` (which names the keys
of the artifacts it reads) and its class's ``revision`` when that is not 0. The package
version is not in it: upgrading raytda keeps every stored artifact whose computation did
not change. Whoever changes what a job computes raises that class's ``revision``; the
keys of the jobs that read it change with it, since their specs name its key.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from raytda.specs import Member, Recipe, stable_hash

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.store import ArtifactStore
    from raytda.task import Task


#: a forward and a backward pass, in forward passes (a backward is about twice a forward)
BACKWARD_PASS = 3.0

#: Salt of every key: the package version that keys hashed until 0.4.0 (when the version
#: left the keys), kept so that stores made by raytda 0.4 stay valid. Never change it:
#: that would recompute every artifact of every store.
KEY_SALT = "0.4.0"


def training_work(recipe: Recipe | None, rows: float) -> float:
    """A training's work in forward passes over one sample: epochs x rows x a forward and
    a backward pass (for :meth:`Job.analytic_work`)."""
    return (getattr(recipe, "epochs", None) or 1) * rows * BACKWARD_PASS


class Job:
    """Base class: subclasses are frozen dataclasses with ``kind``, ``spec()`` and ``run``."""

    kind: str = ""
    #: raised whenever what the class computes changes (its numbers, its format): stored
    #: artifacts of an earlier revision are then not reused (0 adds nothing to the key)
    revision: ClassVar[int] = 0
    task: Task
    #: whether the job's measured cost is charged to a configuration (its training or
    #: serving cost; results name the resources these jobs ran on)
    costed: bool = True
    #: per-sample torch work that an accelerator speeds up (the executor's GPU policy
    #: gives it a share); evaluation is cheap numpy work that would hold one idle
    accelerated: bool = True
    #: its artifact is model weights that later jobs of the same model read (a worker
    #: keeps them in memory; jobs that read them prefer the actor that made them)
    holds_model: bool = False
    #: the meta field its body records its cost in (read by evaluation)
    cost_field: str = "serve_time_s"

    def work_shape(self) -> dict[str, Any] | None:
        """What decides how much work the job is, leaving out which member or model it is
        for (seeds, indices): jobs with equal shapes do the same work. None (the default):
        no shape (an evaluation, a copy of the user's checkpoints, a member reduced from
        its shards)."""
        return None

    @cached_property
    def work_class(self) -> str | None:
        """Jobs of one class do the same work: the ETA charges a job its class's measured
        cost (:mod:`raytda.run.eta`). None: the ETA groups it by kind."""
        shape = self.work_shape()
        return None if shape is None else f"{self.kind}-{stable_hash([self.kind, shape], 12)}"

    def affinity(self) -> str | None:
        """Key of the model this job should run next to (the actor that made or loaded it
        holds it), or None."""
        return None

    #: whether its record's cost fields are its own time (an evaluation's hold its
    #: configuration's costs)
    records_own_cost: bool = True
    #: artifacts it writes (an evaluation writes its score chunks beside its result)
    artifacts_written: int = 1

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        """The job's work in forward passes over one sample, from the data's sizes, for
        estimates made before anything like it was measured (the ETA, the cost line
        printed before a sweep; only ratios between jobs matter). None: unknown."""
        return None

    def stored_bytes(self, n_train: int, n_test: int,
                     model_bytes: Callable[[], int | None]) -> int | None:
        """About how many bytes its payload takes, from the data's sizes and
        ``model_bytes()`` (the task's weights, built on the meta device); None: unknown."""
        return None

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    @cached_property
    def key(self) -> str:
        """Content key: computed once per job object (jobs are immutable)."""
        parts: list[Any] = [self.kind, self.spec(), KEY_SALT]
        if self.revision:
            parts.append({"revision": self.revision})
        return f"{self.kind}-{stable_hash(parts, 20)}"

    def deps(self) -> tuple[Job, ...]:
        return ()

    @property
    def inputs(self) -> dict[str, Job]:
        """Artifacts declared for it by the parts it serves (a method's or features part's
        ``member_jobs``), by name; among its ``deps`` and costed to the configurations
        that read it, once per artifact. Default: none."""
        return {}

    def resources(self) -> dict[str, float]:
        """Ray resource request; GPU fractions are set by the executor's policy."""
        return {"num_cpus": 1}

    def complete(self, store: ArtifactStore) -> bool:
        """Whether the stored artifact has every part (its record says it exists)."""
        return True

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        """Make the artifact: call its body (in :mod:`raytda.work`, imported here)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it runs")

    def pack_key(self) -> Hashable | None:
        """Training jobs with equal pack keys may be trained together as one stacked
        pack (:class:`raytda.plan.packs.TrainPack`), each still its own artifact; None
        (the default): it runs alone."""
        return None

    def stored_jobs(self) -> tuple[Job, ...]:
        """The jobs whose artifacts this one stores under their own keys: itself (a pack:
        its members). Their records name their own inputs; anything else it writes is a
        part it owns."""
        return (self,)

    def narrowed(self, keys: set[str]) -> Job:
        """This job storing only ``keys`` of its :meth:`stored_jobs` (those the worker
        could lease); a job that stores one artifact is itself."""
        return self

    def run_pack(self, jobs: list[Job], store: ArtifactStore, args: ComputeArgs) -> None:
        """Make the artifacts of ``jobs`` (this one among them, all of one pack key)
        in one stacked training."""
        raise NotImplementedError(f"{type(self).__name__} does not train in packs")

    def q_source_for(self, q: Job) -> Any | None:
        """Where this job stores the Q that job ``q`` would compute, when its own pass
        computes it too (a feature job that reads Q off the pass that featurizes), else
        None (see :meth:`KindJobs.with_q_from_features`)."""
        return None

    def describe(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return f"<{self.describe()} {self.key}>"


class MemberSource(Protocol):
    """A model that ensemble members are served from: a trained or imported model, or a
    LoRA adapter on one. It is a Job (its artifact is the weights) and says what serving
    one of its members reads."""

    key: str
    task: Task
    index: int
    base_seed: int

    def member_module(self, store: ArtifactStore, member: Member) -> Any:
        """The member's module: these weights at the member's checkpoint (and adapter)."""

    def member_deps(self) -> tuple[Job, ...]:
        """The artifacts serving one of its members reads (itself, and a base model)."""

    def source_shape(self) -> dict[str, Any]:
        """What decides the work of serving its members (not which run it is)."""

    def training_rows(self, n_train: int) -> Any:
        """The train rows its weights were fitted on, or None where unknown."""

    def warm_imports(self) -> None:
        """Import what loading a member needs before serving is timed."""


@dataclass(frozen=True)
class FeaturePart:
    """One feature member's stored payload: the model source it was served from, the
    member, its mask mode and the payload's key. A feature job stores one or more."""

    source: MemberSource
    member: Member
    mask_mode: str
    key: str


@dataclass(frozen=True)
class KindJobs:
    """What one configuration needs, as its ensemble kind declares it
    (:meth:`raytda.ensembles.EnsembleKind.jobs`).

    ``models``: the I trained (or imported) models, whose training times are the
    configuration's I x T_train; ``adapters``: further trainings on top of them (a LoRA
    Ensemble's I x L adapters, T_train,LoRA each); ``features``: the jobs that store the
    feature members' payloads (each lists them in ``parts()``); ``q``: where the Q whose
    mean weights the scores comes from, one per Q member (empty unless the method needs
    Q): its own QValues job, or the PassQ its feature job stores.
    """

    models: tuple[Job, ...]
    adapters: tuple[Job, ...] = ()
    features: tuple[Job, ...] = ()
    q: tuple[Any, ...] = ()

    def parts(self) -> tuple[FeaturePart, ...]:
        """Every feature member's payload, in member order."""
        return tuple(p for job in self.features for p in job.parts())

    def q_jobs(self) -> tuple[Job, ...]:
        """The Q sources that are jobs of their own (the others come with features)."""
        return tuple(q for q in self.q if isinstance(q, Job))

    def with_q_from_features(self) -> KindJobs:
        """The same configuration with each Q job whose pass a feature job already makes
        and stores (:meth:`Job.q_source_for`: the same network, masks and rows) replaced
        by that feature job's Q: one pass fewer per such member. Members whose Q comes
        from another network than their features (a masked variant of an unmasked
        feature member, say) keep their Q job."""
        q_sources: list[Any] = []
        for q in self.q:
            part = next((p for f in self.features if isinstance(q, Job)
                         for p in (f.q_source_for(q),) if p is not None), None)
            q_sources.append(q if part is None else part)
        return replace(self, q=tuple(q_sources))
