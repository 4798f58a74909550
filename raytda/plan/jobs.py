"""Artifact jobs: what each artifact is, what it depends on and its content key.

A job is a pure function of its spec and its input artifacts: it knows its content key
(a hash of everything that determines its output, plus the raytda version), the jobs it
depends on and the resources it wants. Its body sits next to the compute it calls, in
:mod:`raytda.work`; ``run`` imports it only there, so planning a sweep imports no torch.

Kinds: ``model`` (an ensemble model, trained or imported from the user's checkpoints),
``basemodel`` and ``adapter`` (a LoRA Ensemble's base model on the full set and one
adapter on a half), ``ldsmodel`` (one LDS ground-truth training, stored as its outputs on
the test set), ``q`` (Q of a member on the train set, forward passes only), ``block`` (one
member's payload under a method) and ``result`` (one ensemble configuration: scores,
LDS and costs).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raytda.ensembles import Ensemble
from raytda.ground_truth import GroundTruth
from raytda.methods import Method
from raytda.specs import LDSSpec, Member, Recipe, derive_seed, stable_hash
from raytda.version import __version__

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.store import ArtifactStore
    from raytda.task import Task


class Job:
    """Base class: subclasses are frozen dataclasses with ``kind``, ``spec()``, ``body``."""

    kind: str = ""
    body: str = ""  # "module:function" in raytda.work, called as function(job, store, args)
    task: Task
    #: whether the job's measured time is charged to a configuration (its training or
    #: serving cost); such jobs are timed alone on their node (raytda.run.timing_slot)
    costed: bool = True
    #: per-sample torch work that an accelerator speeds up (the executor's GPU policy
    #: gives it a share); evaluation is cheap numpy work that would hold one idle
    accelerated: bool = True
    #: its artifact is model weights that later jobs of the same model read (a worker
    #: keeps them in memory; jobs that read them prefer the actor that made them)
    holds_model: bool = False

    def affinity(self) -> str | None:
        """Key of the model this job should run next to (the actor that made or loaded it
        holds it), or None."""
        return None

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def key(self) -> str:
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

    def spec(self) -> dict[str, Any]:
        return {"task": self.task.train_key, "index": self.index, "base_seed": self.base_seed}

    def describe(self) -> str:
        return f"train model {self.index} of {self.task.name}"

    @property
    def subset_seed(self) -> int:
        return derive_seed("subset", self.base_seed, self.index)

    @property
    def seed(self) -> int:
        return derive_seed("model", self.base_seed, self.index)


def checkpoint_digest(ckpt: Any) -> str:
    """sha256 of a checkpoint file's bytes, or of a state dict's tensors."""
    h = hashlib.sha256()
    if isinstance(ckpt, (str, Path)):
        with open(ckpt, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:  # a state dict: its tensors exist, so torch is loaded already
        import torch

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

    def describe(self) -> str:
        return f"import checkpoints of run {self.index} of {self.task.name}"


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

    def describe(self) -> str:
        return f"train LoRA base model {self.index} of {self.task.name}"

    @property
    def seed(self) -> int:
        return derive_seed("base-model", self.base_seed, self.index)


@dataclass(frozen=True, repr=False)
class TrainAdapter(Job):
    """LoRA adapter ``adapter`` of a base model, fine-tuned on its own random half of S.

    Its key depends on the base model and the adapter index, not on L, so an L=1
    configuration reuses the first adapter of an L=3 one. Stores the adapter weights only.
    """

    base: TrainBase
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

    @property
    def base_seed(self) -> int:
        return self.base.base_seed

    @property
    def recipe(self) -> Recipe:
        return self.task.lora_spec.adapter_recipe(self.task.recipe)

    def spec(self) -> dict[str, Any]:
        return {"base": self.base.key, "adapter": self.adapter,
                "lora": self.task.lora_spec.to_dict(), "recipe": self.recipe.to_dict()}

    def deps(self) -> tuple[Job, ...]:
        return (self.base,)

    def describe(self) -> str:
        return f"train LoRA adapter {self.adapter} of base {self.index} of {self.task.name}"

    @property
    def subset_seed(self) -> int:
        return derive_seed("adapter-subset", self.base_seed, self.index, self.adapter)

    @property
    def seed(self) -> int:
        return derive_seed("adapter", self.base_seed, self.index, self.adapter)


Source = TrainModel | ImportModel | TrainAdapter


def member_deps(source: Source) -> tuple[Job, ...]:
    # An adapter member reads its base model's weights too.
    return (source, source.base) if isinstance(source, TrainAdapter) else (source,)


def mask_seed(source: Source, member: Member) -> int:
    return derive_seed("mask", source.base_seed, source.index, member.checkpoint, member.mask)


def projection_seed(source: Source, member: Member) -> int:
    parts: list[Any] = [source.base_seed, source.index, member.checkpoint, member.projection]
    if member.adapter is not None:  # each adapter its own projection
        parts += ["adapter", member.adapter]
    return derive_seed("projection", *parts)


# --------------------------------------------------------------------------- serving


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

    def deps(self) -> tuple[Job, ...]:
        return member_deps(self.model)

    def affinity(self) -> str | None:
        return self.model.key

    def describe(self) -> str:
        extra = "" if self.member.adapter is None else f" adapter {self.member.adapter}"
        return f"Q of model {self.model.index} mask {self.member.mask}{extra}"


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

    def deps(self) -> tuple[Job, ...]:
        return member_deps(self.model)

    def affinity(self) -> str | None:
        return self.model.key

    def describe(self) -> str:
        m = self.member
        extra = "" if m.adapter is None else f" adapter {m.adapter}"
        return (f"{self.method.name} block model {m.model} ckpt {m.checkpoint} mask {m.mask} "
                f"proj {m.projection}{extra}")


# --------------------------------------------------------------------------- evaluation

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
    kind: str = field(default="result", init=False)
    body: str = field(default="raytda.work.evaluate:evaluate", init=False)
    accelerated = False

    def spec(self) -> dict[str, Any]:
        return {"task": self.task.key, "method": self.method.hashed(),
                "ensemble": self.ensemble.to_dict(),
                "lds": None if self.lds is None else self.lds.to_dict(),
                "base_seed": self.base_seed}

    def describe(self) -> str:
        return f"evaluate {self.method.name} {self.ensemble.label} on {self.task.name}"

    # The pieces, each shared with every other configuration that uses it.
    def models(self) -> tuple[TrainModel | ImportModel, ...] | tuple[TrainBase, ...]:
        """The I trained models: independent ones, imported ones, or LoRA base models."""
        kind = self.ensemble.kind_class
        I = self.ensemble.I
        if kind.uses_lora:
            return tuple(TrainBase(self.task, i, self.base_seed) for i in range(I))
        if self.task.checkpoints() is not None:
            return tuple(ImportModel(self.task, i) for i in range(I))
        return tuple(TrainModel(self.task, i, self.base_seed) for i in range(I))

    def adapters(self) -> tuple[TrainAdapter, ...]:
        """The I * L LoRA adapters (none for other kinds)."""
        if not self.ensemble.kind_class.uses_lora:
            return ()
        return tuple(TrainAdapter(b, a) for b in self.models() for a in range(self.ensemble.L))

    def _source(self, models, mem: Member) -> Source:
        return models[mem.model] if mem.adapter is None else TrainAdapter(models[mem.model],
                                                                          mem.adapter)

    def blocks(self) -> tuple[Job, ...]:
        """The jobs that make the feature members' payloads: one MemberBlock per member,
        or, for kinds that share gradients (``shares_gradients``), one
        SharedGradientBlocks per model. ``block_parts`` lists their payload artifacts."""
        from dataclasses import replace

        models = self.models()
        if getattr(self.ensemble.kind_class, "shares_gradients", False):
            return shared_blocks(self, models)
        out = []
        for mem in self.ensemble.feature_members(self.task.saved_epochs()):
            if not self.method.impl.projected:  # projection seeds mean nothing then
                mem = replace(mem, projection=0)
            out.append(MemberBlock(self._source(models, mem), mem, self.method,
                                   self.ensemble.mask_mode))
        return tuple(out)

    def qvalues(self) -> tuple[QValues, ...]:
        from dataclasses import replace

        if not self.method.impl.needs_q:
            return ()
        models = self.models()
        seen: dict[str, QValues] = {}
        for mem in self.ensemble.members(self.task.saved_epochs()):
            q = QValues(self._source(models, mem), replace(mem, projection=0),
                        self.ensemble.mask_mode)
            seen.setdefault(q.key, q)
        return tuple(seen.values())

    def lds_models(self) -> tuple[LDSModel, ...]:
        if not isinstance(self.lds, LDSSpec):
            return ()
        return tuple(LDSModel(self.task, self.lds, j, r)
                     for j in range(self.lds.m) for r in range(self.lds.models_per_subset))

    def deps(self) -> tuple[Job, ...]:
        return (*self.models(), *self.adapters(), *self.qvalues(), *self.blocks(),
                *self.lds_models())

    def complete(self, store: ArtifactStore) -> bool:
        """The result and every chunk of its scores are there."""
        return all(store.has(c["key"]) for c in store.meta(self.key).get("score_chunks", ()))


def scores_key(result_key: str, chunk: int) -> str:
    """Key of chunk ``chunk`` (test rows) of a configuration's aggregated scores."""
    return f"scores-{stable_hash([result_key, chunk], 20)}"


# --------------------------------------------------------------------------- shared gradients


@dataclass(frozen=True, repr=False)
class SharedGradientBlocks(Job):
    """TRAK payloads of the unmasked members (model, projection d), d < D, of one model,
    from its per-sample gradients computed once: one gradient pass, D projections, D
    kernel solves (``raytda.core.trak.shared_gradient_features``).

    Member d's payload equals the MemberBlock payload of ``Member(model, projection=d)``
    (the same projection seed) up to float32 rounding. Each is its own artifact
    (``parts()``), so evaluation reads and caches members one at a time as it does
    MemberBlocks; the job's own record holds the time split.
    """

    model: Source
    D: int
    method: Method
    kind: str = field(default="block", init=False)
    body: str = field(default="raytda.work.shared:shared_gradient_blocks", init=False)

    @property
    def task(self) -> Task:  # type: ignore[override]
        return self.model.task

    def members(self) -> tuple[Member, ...]:
        return tuple(Member(self.model.index, None, None, d) for d in range(self.D))

    def spec(self) -> dict[str, Any]:
        return {"model": self.model.key, "shared_gradients": self.D,
                "method": self.method.hashed()}

    def deps(self) -> tuple[Job, ...]:
        return member_deps(self.model)

    def affinity(self) -> str | None:
        return self.model.key

    def parts(self) -> tuple[str, ...]:
        """Keys of the D member payloads, in projection order."""
        return tuple(f"blockpart-{stable_hash([self.key, d], 20)}" for d in range(self.D))

    def complete(self, store: ArtifactStore) -> bool:
        return all(store.has(k) for k in self.parts())

    def describe(self) -> str:
        return (f"{self.method.name} shared-gradient blocks model {self.model.index} "
                f"proj 0..{self.D - 1}")


def block_parts(job: Job) -> tuple[str, ...]:
    """Keys of the member payloads a block job stores: its own, or its parts."""
    parts = getattr(job, "parts", None)
    return parts() if parts is not None else (job.key,)


def shared_blocks(ev: Evaluate, models) -> tuple[SharedGradientBlocks, ...]:
    """One SharedGradientBlocks per model, for kinds whose feature members are each
    model's unmasked final weights under projections 0..D-1."""
    from raytda.methods.trak import TRAK
    from raytda.specs import SpecError

    if not isinstance(ev.method.impl, TRAK):  # the job computes TRAK's payload itself
        raise SpecError(f"{ev.ensemble.label} shares gradients between TRAK members; "
                        f"method {ev.method.name!r} is not TRAK")
    by_model: dict[int, list[Member]] = {}
    for mem in ev.ensemble.feature_members(ev.task.saved_epochs()):
        by_model.setdefault(mem.model, []).append(mem)
    out = []
    for i, mems in sorted(by_model.items()):
        job = SharedGradientBlocks(models[i], len(mems), ev.method)
        if tuple(mems) != job.members():
            raise SpecError(f"{ev.ensemble.label}: shared-gradient members must be the "
                            f"unmasked final model under projections 0..D-1, got {mems}")
        out.append(job)
    return tuple(out)
