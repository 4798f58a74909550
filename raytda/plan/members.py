"""A member's jobs: its Q on the train set and its payload under a method.

A member (:class:`raytda.specs.Member`) is served from a member source (a trained or
imported model, or a LoRA adapter on one: :class:`raytda.plan.job.MemberSource`).
:class:`QValues` is TRAK's Q on the train set, a forward pass; :class:`MemberBlock` is the
member's payload (TRAK: its train side and test features; others: its n_test x n_train
block), and when its features give Q from the pass that featurizes (``train_q``) it
stores that Q too (:class:`PassQ`). Bodies: :mod:`raytda.work.serve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.plan.job import BACKWARD_PASS, FeaturePart, Job, MemberSource
from raytda.specs import Member, stable_hash

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.methods import Method
    from raytda.store import ArtifactStore
    from raytda.task import Task


#: a model that members are served from (kept as a short name for annotations)
Source = MemberSource


def member_deps(source: Source) -> tuple[Job, ...]:
    """The artifacts serving a member of ``source`` reads (its own say)."""
    return source.member_deps()


def member_shape(member: Member) -> dict[str, Any]:
    """A member's part in its jobs' work shape: whether it is masked or an adapter, not
    which one. (A projection another member built already is charged as if built:
    :mod:`raytda.core.projector_cache`.)"""
    return {"checkpointed": member.checkpoint is not None, "masked": member.mask is not None,
            "adapter": member.adapter is not None}


# --------------------------------------------------------------------------- serving


def member_label(member: Member) -> str:
    """A member as people read it: "model 2, checkpoint 3, mask 1, adapter 0"."""
    parts = [f"model {member.model}"]
    for name, value in (("checkpoint", member.checkpoint), ("mask", member.mask),
                        ("adapter", member.adapter)):
        if value is not None:
            parts.append(f"{name} {value}")
    if member.projection:
        parts.append(f"projection {member.projection}")
    return ", ".join(parts)


@dataclass(frozen=True, repr=False)
class QValues(Job):
    """TRAK's Q on the train set for one (model, checkpoint, mask or adapter): forward only."""

    model: Source
    member: Member  # projection index is irrelevant here and normalized to 0
    mask_mode: str = "fixed"
    kind: str = field(default="q", init=False)

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.serve import q_values

        q_values(self, store, args)

    @property
    def task(self) -> Task:  # type: ignore[override]
        return self.model.task

    def spec(self) -> dict[str, Any]:
        mode = self.mask_mode if self.member.mask is not None else None
        return {"model": self.model.key, "member": self.member.to_dict(), "mask_mode": mode}

    def work_shape(self) -> dict[str, Any] | None:
        mode = self.mask_mode if self.member.mask is not None else None
        return {"model": self.model.source_shape(), "member": member_shape(self.member),
                "mask_mode": mode}

    def deps(self) -> tuple[Job, ...]:
        return member_deps(self.model)

    def affinity(self) -> str | None:
        return self.model.key

    def describe(self) -> str:
        return f"Q of {member_label(self.member)} of {self.task.name}"

    def stored_key(self, store: ArtifactStore) -> str:
        """The key its Q is read from (its own)."""
        return self.key

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return float(n_train)  # one forward pass per train row

    def stored_bytes(self, n_train, n_test, model_bytes):
        return 4 * n_train  # float32


@dataclass(frozen=True)
class PassQ:
    """A member's Q on the train set, stored by its own feature job (``MemberBlock`` with
    ``train_q``) from the pass that featurized it: what a :class:`QValues` job would store
    for the same (model, checkpoint, mask or adapter), with no pass of its own. Not a job:
    evaluation and the Attributor read it by ``key`` as they read a QValues artifact; its
    record's ``serve_time_s`` is 0, the time being in the member's serving."""

    block: MemberBlock
    key: str
    replaces: QValues

    def describe(self) -> str:
        return (f"Q of {member_label(self.block.member)} of {self.block.task.name} "
                f"(from its features)")

    def stored_key(self, store: ArtifactStore) -> str:
        """The key its Q is read from: its own, or in a store made before feature jobs
        stored Q, the QValues artifact it replaces (the same values)."""
        return self.key if store.has(self.key) or not store.has(self.replaces.key) \
            else self.replaces.key


#: where one Q member's train-set Q comes from: its own job, or its feature job
QSource = QValues | PassQ


@dataclass(frozen=True, repr=False)
class MemberBlock(Job):
    """One member's payload under a method (TRAK: its train side and test features;
    others: its n_test x n_train block)."""

    model: Source
    member: Member
    method: Method
    mask_mode: str = "fixed"
    kind: str = field(default="block", init=False)

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.serve import member_block

        member_block(self, store, args)

    def __post_init__(self) -> None:
        # as Evaluate: a Method choosing k or features per Task is resolved before keys
        object.__setattr__(self, "method", self.method.resolved(self.task))

    @property
    def task(self) -> Task:  # type: ignore[override]
        return self.model.task

    def spec(self) -> dict[str, Any]:
        mode = self.mask_mode if self.member.mask is not None else None
        spec = {"model": self.model.key, "member": self.member.to_dict(),
                "method": self.method.hashed(), "mask_mode": mode}
        if self.task.key != self.task.train_key:  # the test set is not in the model key
            spec["test"] = self.task.key
        return spec

    def work_shape(self) -> dict[str, Any] | None:
        mode = self.mask_mode if self.member.mask is not None else None
        return {"model": self.model.source_shape(), "member": member_shape(self.member),
                "method": self.method.hashed(), "mask_mode": mode, "test": self.task.key,
                "train_q": self.train_q}

    def gives_q_of(self, q: QValues) -> bool:
        """Whether this block's pass over the train rows is the one ``q`` would make:
        the same model source, member (but its projection) and mask mode, so the same
        network, masks and rows. A block built in train shards never is (its train rows
        are featurized by other jobs)."""
        return (self.whole_pass and self.model.key == q.model.key
                and replace(self.member, projection=0) == q.member
                and QValues(self.model, q.member, self.mask_mode).key == q.key)

    #: its own body featurizes every train row (a sharded block's shards do)
    whole_pass: ClassVar[bool] = True

    @property
    def train_q(self) -> bool:
        """Whether it also stores its member's Q on the train set (``q_part()``), read
        off the pass that featurizes the train rows: when its method needs Q and its
        features give it from that pass (``q_in_pass``). Decided by the block alone, so
        every configuration that shares the block (one key) shares what it stores; its
        payload is unchanged (its key too), the Q is an artifact of its own."""
        return (self.whole_pass and self.method.impl.needs_q
                and self.method.features_part.q_in_pass)

    def q_part(self, replaces: QValues | None = None) -> PassQ | None:
        """Where this block stores its member's Q (``train_q``), else None; ``replaces``:
        the QValues job it stands for (read instead from stores made before blocks
        stored Q)."""
        if not self.train_q:
            return None
        if replaces is None:
            replaces = QValues(self.model, replace(self.member, projection=0), self.mask_mode)
        return PassQ(self, f"qpart-{stable_hash([self.key, 'q'], 20)}", replaces)

    def q_source_for(self, q: Job) -> PassQ | None:
        """The Q this block stores when ``q`` is a Q job whose pass it makes
        (``gives_q_of``) and it stores Q (``train_q``), else None."""
        if isinstance(q, QValues) and self.train_q and self.gives_q_of(q):
            return self.q_part(q)
        return None

    def complete(self, store: ArtifactStore) -> bool:
        """Its Q is there too, when it stores one."""
        q = self.q_part()
        return q is None or store.has(q.key)

    @cached_property
    def method_inputs(self) -> dict[str, Job]:
        """The jobs its method declares for this member (a member's fitted curvature
        factors, say), by the name the method reads them under (``MemberContext.inputs``).
        Each is keyed by what it depends on, so every configuration that serves this
        member shares it."""
        return self.method.impl.member_jobs(self.method, self)

    @cached_property
    def feature_inputs(self) -> dict[str, Job]:
        """The jobs its features part declares for this member (given to its featurizer)."""
        return self.method.features_part.member_jobs(self)

    @property
    def inputs(self) -> dict[str, Job]:
        """Every job its method and features part declare for this member."""
        return {**self.method_inputs, **self.feature_inputs}

    def deps(self) -> tuple[Job, ...]:
        return (*member_deps(self.model), *self.inputs.values())

    def affinity(self) -> str | None:
        return self.model.key

    def parts(self) -> tuple[FeaturePart, ...]:
        """The member payload this job stores (its own artifact)."""
        return (FeaturePart(self.model, self.member, self.mask_mode, self.key),)

    def describe(self) -> str:
        return f"{self.method.name} features of {member_label(self.member)} of {self.task.name}"

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return (n_train + n_test) * BACKWARD_PASS  # a gradient of every row

    def stored_bytes(self, n_train, n_test, model_bytes):
        return self.method.impl.stored_bytes(self.method, n_train, n_test)
