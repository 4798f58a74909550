"""LoRA Ensemble: I base models trained on the full set (shorter), L LoRA adapters per
base model, each fine-tuned on its own random half; gradients over the adapter only.

A task that gives its own checkpoints (``Task.checkpoints()``) gives the base models:
adapter ``a`` of base ``i`` is fine-tuned on the last checkpoint of run ``i``, and no base
is trained (the configuration's training time is its adapters').

Its jobs are here: :class:`TrainBase` (a base model on the full set) and
:class:`TrainAdapter` (one adapter on a base), a member source."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.plan.job import Job, training_work
from raytda.plan.models import ImportModel, TrainModel
from raytda.specs import Member, Recipe, _check, derive_seed

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.store import ArtifactStore
    from raytda.task import Task


@register_ensemble
class LoRA(EnsembleKind):
    name = "lora"
    takes = frozenset({"L"})

    def check(self, ens):
        super().check(ens)
        _check(ens.L >= 1, f"L (LoRA adapters per base model) must be an integer >= 1, got "
                           f"{ens.L!r}; write e.g. 'lora:I=1,L=3'")

    def check_task(self, ens, task):
        what = "LoRA adapters" if task.checkpoints() is not None \
            else "base models and LoRA adapters"
        _check(task.lora is not None and task.recipe is not None,
               f"ensemble kind {self.name!r} trains {what}: task {task.name!r} needs a "
               f"recipe and Task.lora (with its target modules)")

    def check_model(self, ens, task, net):
        names = {n.rsplit(".", 1)[-1] for n, _ in net.module.named_modules()}
        missing = [t for t in task.lora_spec.targets if t not in names]
        _check(not missing, f"task {task.name!r}: LoRA targets {missing} are not modules of "
                            f"its model; set Task.lora = LoRASpec(targets=(...)) to module names")

    def members(self, ens, epochs):
        return tuple(Member(i, adapter=a) for i in range(ens.I) for a in range(ens.L))

    # Base models on the full set (or the user's checkpoints); each member is an adapter
    # on one of them.
    def models(self, ev):
        if ev.task.checkpoints() is not None:
            return tuple(ImportModel(ev.task, i) for i in range(ev.ensemble.I))
        return tuple(TrainBase(ev.task, i, ev.base_seed) for i in range(ev.ensemble.I))

    def adapters(self, ev, models):
        return tuple(TrainAdapter(b, a) for b in models for a in range(ev.ensemble.L))

    def source(self, models, member):
        return TrainAdapter(models[member.model], member.adapter)

    def train_time(self, ens, u):
        # I x T_Train,Base + I x L x T_Train,LoRA
        return ens.I * u.train + ens.I * ens.L * u.train_lora

    def stored_params(self, ens, per_model, per_adapter=0):
        return ens.I * per_model + ens.I * ens.L * per_adapter

    def serve_time(self, ens, u):
        return ens.I * ens.L * u.serve


@dataclass(frozen=True, repr=False)
class TrainBase(TrainModel):
    """LoRA Ensemble base model ``index``: trained from scratch on the FULL training set
    with the shorter base recipe (``LoRASpec.base_recipe``; paper appendix C.2)."""

    kind: str = field(default="basemodel", init=False)

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import train_base

        train_base(self, store, args)

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

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import train_adapter

        train_adapter(self, store, args)

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

    def pack_key(self) -> Hashable | None:
        # adapters on one base with one LoRA spec and recipe share the frozen base
        return ("adapter", self.base.key, self.task.lora_spec, self.recipe)

    def run_pack(self, jobs: list[Job], store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import adapter_pack

        adapter_pack(jobs, store, args)

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

    def member_deps(self) -> tuple[Job, ...]:
        """An adapter member reads its base model's weights too."""
        return (self, self.base)

    def warm_imports(self) -> None:
        import peft  # noqa: F401

        import raytda.core.lora  # noqa: F401

    @property
    def seed(self) -> int:
        return derive_seed("adapter", self.base_seed, self.index, self.adapter)
