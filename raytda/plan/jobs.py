"""Artifact jobs: what each artifact is, what it depends on and its content key.

A job is a pure function of its spec and its input artifacts: it knows its content key
(a hash of everything that determines its output, plus the raytda version, computed once
per job), the jobs it depends on, the resources it wants and its traits, which the
executors read instead of its name: ``accelerated`` (a GPU share speeds it up),
``holds_model`` (its artifact is model weights that later jobs read), ``affinity()``
(the model it should run next to) and ``costed`` (its time is a configuration's cost).
Bodies sit next to the compute they call, in :mod:`raytda.work`, and are imported only
when a job runs, so planning a sweep imports no torch.

Jobs here: the ensemble models (trained, or imported from the user's checkpoints), LoRA
base models and adapters, LDS models (ground truth), Q on the train set, one member's
payload under a method (``MemberBlock``) and one configuration's evaluation
(``Evaluate``). Which of them a configuration needs is its ensemble kind's decision
(:meth:`raytda.ensembles.EnsembleKind.jobs`, returning :class:`KindJobs`); a kind may
declare jobs of its own (``raytda.ensembles.dropout_forward_shared``).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.ground_truth import GroundTruth
from raytda.specs import LDSSpec, Member, Recipe, derive_seed, stable_hash
from raytda.version import __version__

if TYPE_CHECKING:
    # annotations only: the kinds import this module (a kind may declare jobs)
    from raytda.core.args import ComputeArgs
    from raytda.ensembles import Ensemble
    from raytda.methods import Method
    from raytda.plan.shards import ShardRule
    from raytda.store import ArtifactStore
    from raytda.task import Task


#: a forward and a backward pass, in forward passes (a backward is about twice a forward)
BACKWARD_PASS = 3.0


def training_work(recipe: Recipe | None, rows: float) -> float:
    """A training's work in forward passes over one sample: epochs x rows x a forward and
    a backward pass (for :meth:`Job.analytic_work`)."""
    return (getattr(recipe, "epochs", None) or 1) * rows * BACKWARD_PASS


class Job:
    """Base class: subclasses are frozen dataclasses with ``kind``, ``spec()``, ``body``."""

    kind: str = ""
    body: str = ""  # "module:function" in raytda.work, called as function(job, store, args)
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
        return f"{self.kind}-{stable_hash([self.kind, self.spec(), __version__], 20)}"

    def deps(self) -> tuple[Job, ...]:
        return ()

    def resources(self) -> dict[str, float]:
        """Ray resource request; GPU fractions are set by the executor's policy."""
        return {"num_cpus": 1}

    def complete(self, store: ArtifactStore) -> bool:
        """Whether the stored artifact has every part (its record says it exists)."""
        return True

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        """Make the artifact. raytda's jobs name their body as ``body`` ("module:function",
        imported only here, so planning loads no torch); a job class of one's own may
        override ``run`` instead."""
        module, _, fn = self.body.partition(":")
        getattr(importlib.import_module(module), fn)(self, store, args)

    def describe(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return f"<{self.describe()} {self.key}>"


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, repr=False)
class TrainModel(Job):
    """Ensemble model ``index``: trained from scratch on its own random half of S."""

    task: Task
    index: int
    base_seed: int = 0
    kind: str = field(default="model", init=False)
    body: str = field(default="raytda.work.train:train_model", init=False)
    holds_model = True

    def affinity(self) -> str | None:
        return self.key

    cost_field = "train_time_s"

    def spec(self) -> dict[str, Any]:
        return {"task": self.task.train_key, "index": self.index, "base_seed": self.base_seed}

    #: which rows it trains on, as a share of the train set (its own random half)
    rows_trained: ClassVar[float] = 0.5

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        recipe = getattr(self, "recipe", None) or self.task.recipe
        return training_work(recipe, n_train * self.rows_trained)

    def stored_bytes(self, n_train, n_test, model_bytes):
        per_state = model_bytes()
        return None if per_state is None else per_state * len(self.task.saved_epochs())

    def source_shape(self) -> dict[str, Any]:
        """As a member source, what decides the work of serving its members: the task's
        model and data, not which training run it is."""
        return {"kind": self.kind, "task": self.task.train_key}

    def work_shape(self) -> dict[str, Any] | None:
        # every run trains the same recipe on a random half of the same size
        return self.source_shape()

    def describe(self) -> str:
        return f"train model {self.index} of {self.task.name}"


    @property
    def subset_seed(self) -> int:
        return derive_seed("subset", self.base_seed, self.index)

    @property
    def seed(self) -> int:
        return derive_seed("model", self.base_seed, self.index)

    # As a member source: what serving a member of this model reads.
    def member_module(self, store: ArtifactStore, member: Member):
        """The member's module: this model's weights at the member's checkpoint."""
        from raytda.work.weights import stored_module

        return stored_module(store, self.task, self.key, member.checkpoint)

    def training_rows(self, n_train: int):
        """The train rows the weights were fitted on: the model's own random half."""
        from raytda.core.train import half_subset

        return half_subset(n_train, self.subset_seed)

    def warm_imports(self) -> None:
        """Import what loading a member needs, before serving is timed (a one-off
        library import is no member's serving cost); nothing beyond torch here."""


# path -> ((size, mtime_ns), digest): each checkpoint file is read once per process
# while it stays unchanged (planning asks for the digests of every import job's key).
_FILE_DIGESTS: dict[str, tuple[tuple[int, int], str]] = {}


def file_digest(path: str | Path) -> str:
    """sha256 (24 hex) of a file's bytes; remembered while its size and mtime hold."""
    import os

    path = os.path.abspath(path)
    st = os.stat(path)
    stamp = (st.st_size, st.st_mtime_ns)
    known = _FILE_DIGESTS.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    _FILE_DIGESTS[path] = (stamp, h.hexdigest()[:24])
    return _FILE_DIGESTS[path][1]


def checkpoint_digest(ckpt: Any) -> str:
    """sha256 of a checkpoint file's bytes, or of a state dict's tensors."""
    if isinstance(ckpt, (str, Path)):
        return file_digest(ckpt)
    import torch  # a state dict: its tensors exist, so torch is loaded already

    h = hashlib.sha256()
    for k in sorted(ckpt):
        t = ckpt[k].detach().cpu().contiguous().reshape(-1)
        h.update(k.encode())
        h.update(repr((tuple(ckpt[k].shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24]


@dataclass(frozen=True, repr=False)
class ImportModel(TrainModel):
    """Ensemble model ``index``: training run ``index`` of the user's own checkpoints,
    copied into the store (so every member reads one verified artifact). Keyed by the
    checkpoints' content, not their paths."""

    body: str = field(default="raytda.work.train:import_model", init=False)

    def spec(self) -> dict[str, Any]:
        run = self.task.checkpoints()[self.index]
        return {"task": self.task.train_key, "run": self.index,
                "checkpoints": [checkpoint_digest(c) for c in run]}

    def work_shape(self) -> dict[str, Any] | None:
        return None  # a copy of the user's files

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return None  # a copy, not a training

    def describe(self) -> str:
        return f"import checkpoints of run {self.index} of {self.task.name}"

    def training_rows(self, n_train: int):
        """None: raytda does not know what the user's checkpoints were trained on."""
        return None


@dataclass(frozen=True, repr=False)
class LDSModel(Job):
    """Ground truth: a model retrained on LDS subset ``subset``; stores f on the test set."""

    task: Task
    lds: LDSSpec
    subset: int
    replicate: int = 0
    kind: str = field(default="ldsmodel", init=False)
    body: str = field(default="raytda.work.train:lds_model", init=False)
    costed: bool = field(default=False, init=False)  # ground truth: nobody's cost

    def spec(self) -> dict[str, Any]:
        lds = {"m": self.lds.m, "alpha": self.lds.alpha, "seed": self.lds.seed}
        return {"task": self.task.key, "lds": lds, "subset": self.subset,
                "replicate": self.replicate}

    def describe(self) -> str:
        return f"LDS model {self.subset}.{self.replicate} of {self.task.name}"

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        # a training on the subset, then f on every test row
        return training_work(self.task.recipe, n_train * self.lds.alpha) + n_test

    def stored_bytes(self, n_train, n_test, model_bytes):
        return 4 * n_test  # f on the test set, float32

    @property
    def seed(self) -> int:
        return derive_seed("lds-model", self.lds.seed, self.subset, self.replicate)


@dataclass(frozen=True, repr=False)
class TrainBase(TrainModel):
    """LoRA Ensemble base model ``index``: trained from scratch on the FULL training set
    with the shorter base recipe (``LoRASpec.base_recipe``; paper appendix C.2)."""

    kind: str = field(default="basemodel", init=False)
    body: str = field(default="raytda.work.train:train_base", init=False)

    @property
    def recipe(self) -> Recipe:
        return self.task.lora_spec.base_recipe(self.task.recipe)

    def spec(self) -> dict[str, Any]:
        return {"task": self.task.train_key, "recipe": self.recipe.to_dict(), "index": self.index,
                "base_seed": self.base_seed}

    def source_shape(self) -> dict[str, Any]:
        return {"kind": self.kind, "task": self.task.train_key, "recipe": self.recipe.to_dict()}

    rows_trained: ClassVar[float] = 1.0  # the whole train set

    def stored_bytes(self, n_train, n_test, model_bytes):
        return model_bytes()  # its last state only

    def describe(self) -> str:
        return f"train LoRA base model {self.index} of {self.task.name}"

    @property
    def seed(self) -> int:
        return derive_seed("base-model", self.base_seed, self.index)


@dataclass(frozen=True, repr=False)
class TrainAdapter(Job):
    """LoRA adapter ``adapter`` of a base model, fine-tuned on its own random half of S.

    The base is a :class:`TrainBase`, or an :class:`ImportModel` (the user's checkpoints).
    Its key depends on the base model and the adapter index, not on L, so an L=1
    configuration reuses the first adapter of an L=3 one. Stores the adapter weights only.
    """

    base: TrainModel
    adapter: int
    kind: str = field(default="adapter", init=False)
    body: str = field(default="raytda.work.train:train_adapter", init=False)
    holds_model = True

    def affinity(self) -> str | None:
        return self.key

    @property
    def task(self) -> Task:  # type: ignore[override]
        return self.base.task

    @property
    def index(self) -> int:
        return self.base.index

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return training_work(self.recipe, n_train / 2)  # its own random half

    def stored_bytes(self, n_train, n_test, model_bytes):
        return model_bytes()  # its LoRA weights only: at most the model's, charged as such

    @property
    def base_seed(self) -> int:
        return self.base.base_seed

    @property
    def recipe(self) -> Recipe:
        return self.task.lora_spec.adapter_recipe(self.task.recipe)

    cost_field = "train_time_s"

    def spec(self) -> dict[str, Any]:
        return {"base": self.base.key, "adapter": self.adapter,
                "lora": self.task.lora_spec.to_dict(), "recipe": self.recipe.to_dict()}

    def source_shape(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base.source_shape(),
                "lora": self.task.lora_spec.to_dict()}

    def work_shape(self) -> dict[str, Any] | None:
        return {**self.source_shape(), "recipe": self.recipe.to_dict()}

    def deps(self) -> tuple[Job, ...]:
        return (self.base,)

    def describe(self) -> str:
        return f"train LoRA adapter {self.adapter} of base {self.index} of {self.task.name}"

    @property
    def subset_seed(self) -> int:
        return derive_seed("adapter-subset", self.base_seed, self.index, self.adapter)

    # As a member source: the base model with this adapter; only the adapter is trainable
    # (differentiated), which is what makes LoRA members cheap to serve.
    def member_module(self, store: ArtifactStore, member: Member):
        from raytda.core.lora import load_adapted
        from raytda.work.weights import stored_module

        adapter, _ = store.get(self.key)
        return load_adapted(stored_module(store, self.task, self.base.key), adapter,
                            self.task.lora_spec)

    def training_rows(self, n_train: int):
        """The adapter's own random half (its fine-tuning set)."""
        from raytda.core.train import half_subset

        return half_subset(n_train, self.subset_seed)

    def warm_imports(self) -> None:
        import peft  # noqa: F401

        import raytda.core.lora  # noqa: F401

    @property
    def seed(self) -> int:
        return derive_seed("adapter", self.base_seed, self.index, self.adapter)


Source = TrainModel | ImportModel | TrainAdapter


def member_deps(source: Source) -> tuple[Job, ...]:
    # An adapter member reads its base model's weights too.
    return (source, source.base) if isinstance(source, TrainAdapter) else (source,)


def member_shape(member: Member) -> dict[str, Any]:
    """A member's part in its jobs' work shape: whether it is masked or an adapter, not
    which one. (A projection another member built already is charged as if built:
    :mod:`raytda.core.projector_cache`.)"""
    return {"checkpointed": member.checkpoint is not None, "masked": member.mask is not None,
            "adapter": member.adapter is not None}


def mask_seed(source: Source, member: Member) -> int:
    return derive_seed("mask", source.base_seed, source.index, member.checkpoint, member.mask)


def projection_seed(source: Source, member: Member) -> int:
    parts: list[Any] = [source.base_seed, source.index, member.checkpoint, member.projection]
    if member.adapter is not None:  # each adapter its own projection
        parts += ["adapter", member.adapter]
    return derive_seed("projection", *parts)


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
    body: str = field(default="raytda.work.serve:q_values", init=False)

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


@dataclass(frozen=True)
class FeaturePart:
    """One feature member's stored payload: the model source it was served from, the
    member, its mask mode and the payload's key. A feature job stores one or more."""

    source: Source
    member: Member
    mask_mode: str
    key: str


@dataclass(frozen=True, repr=False)
class MemberBlock(Job):
    """One member's payload under a method (TRAK: its train side and test features;
    others: its n_test x n_train block)."""

    model: Source
    member: Member
    method: Method
    mask_mode: str = "fixed"
    kind: str = field(default="block", init=False)
    body: str = field(default="raytda.work.serve:member_block", init=False)

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

    def complete(self, store: ArtifactStore) -> bool:
        """Its Q is there too, when it stores one."""
        q = self.q_part()
        return q is None or store.has(q.key)

    def deps(self) -> tuple[Job, ...]:
        return member_deps(self.model)

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


# --------------------------------------------------------------------------- evaluation

Truth = LDSSpec | GroundTruth | None


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
    q: tuple[QSource, ...] = ()

    def parts(self) -> tuple[FeaturePart, ...]:
        """Every feature member's payload, in member order."""
        return tuple(p for job in self.features for p in job.parts())

    def q_jobs(self) -> tuple[QValues, ...]:
        """The Q sources that are jobs of their own (the others come with features)."""
        return tuple(q for q in self.q if isinstance(q, Job))

    def with_q_from_features(self) -> KindJobs:
        """The same configuration with each QValues job whose pass a feature job already
        makes (``MemberBlock.gives_q_of``: the same network, masks and rows) and which
        stores its Q (``MemberBlock.train_q``) replaced by that block's Q: one pass
        fewer per such member. Members whose Q comes from another network than their
        features (a masked variant of an unmasked feature member, say) keep their
        QValues job."""
        q_sources: list[QSource] = []
        for q in self.q:
            block = next((f for f in self.features if isinstance(q, QValues)
                          and isinstance(f, MemberBlock) and f.train_q and f.gives_q_of(q)),
                         None)
            part = None if block is None else block.q_part(q)
            q_sources.append(q if part is None else part)
        return replace(self, q=tuple(q_sources))


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
    body: str = field(default="raytda.work.evaluate:evaluate", init=False)
    accelerated = False

    def __post_init__(self) -> None:
        # proj_dim and features chosen per Task (Method.resolved) before any key is made
        object.__setattr__(self, "method", self.method.resolved(self.task))

    def spec(self) -> dict[str, Any]:
        return {"task": self.task.key, "method": self.method.hashed(),
                "ensemble": self.ensemble.to_dict(),
                "lds": None if self.lds is None else self.lds.to_dict(),
                "base_seed": self.base_seed}

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

    def qvalues(self) -> tuple[QValues, ...]:
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

    def complete(self, store: ArtifactStore) -> bool:
        """The result and every chunk of its scores are there."""
        return all(store.has(c["key"]) for c in store.meta(self.key).get("score_chunks", ()))


def scores_key(result_key: str, chunk: int) -> str:
    """Key of chunk ``chunk`` (test rows) of a configuration's aggregated scores."""
    return f"scores-{stable_hash([result_key, chunk], 20)}"


def task_models(task: Task, count: int, base_seed: int = 0) -> tuple[TrainModel, ...]:
    """A configuration's ``count`` ensemble models: the task's own checkpoints imported
    when it gives them, else trained from scratch, each on its random half."""
    if task.checkpoints() is not None:
        return tuple(ImportModel(task, i) for i in range(count))
    return tuple(TrainModel(task, i, base_seed) for i in range(count))
