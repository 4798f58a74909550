"""The models of a sweep as jobs: ensemble models trained from scratch or imported from the
user's checkpoints, and the LDS models that are the ground truth.

Each is a member source (:class:`raytda.plan.job.MemberSource`) or, for LDS models, a
model whose outputs on the test set are stored. Bodies: :mod:`raytda.work.train`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.plan.job import Job, training_work
from raytda.specs import LDSSpec, Member, derive_seed

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.store import ArtifactStore
    from raytda.task import Task


@dataclass(frozen=True, repr=False)
class TrainModel(Job):
    """Ensemble model ``index``: trained from scratch on its own random half of S."""

    task: Task
    index: int
    base_seed: int = 0
    kind: str = field(default="model", init=False)

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import train_model

        train_model(self, store, args)

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

    def pack_key(self) -> Hashable | None:
        # same training data and recipe, each on its own random half; runs of the user's
        # checkpoints and LoRA bases (subclasses) train alone
        if type(self) is not TrainModel or not self.task.trains_with_fit:
            return None
        return ("model", self.task.train_key, self.task.recipe)

    def run_pack(self, jobs: list[Job], store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import model_pack

        model_pack(jobs, store, args)

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
    def member_deps(self) -> tuple[Job, ...]:
        """The artifacts serving one of its members reads: its weights."""
        return (self,)

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

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import import_model

        import_model(self, store, args)

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

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import lds_model

        lds_model(self, store, args)

    costed: bool = field(default=False, init=False)  # ground truth: nobody's cost

    def spec(self) -> dict[str, Any]:
        lds = {"m": self.lds.m, "alpha": self.lds.alpha, "seed": self.lds.seed}
        return {"task": self.task.key, "lds": lds, "subset": self.subset,
                "replicate": self.replicate}

    def describe(self) -> str:
        return f"LDS model {self.subset}.{self.replicate} of {self.task.name}"

    def pack_key(self) -> Hashable | None:
        # same training data, recipe and subset fraction (so as many rows each)
        if not self.task.trains_with_fit:
            return None
        return ("ldsmodel", self.task.train_key, self.task.recipe, self.lds.alpha)

    def run_pack(self, jobs: list[Job], store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import lds_pack

        lds_pack(jobs, store, args)

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        # a training on the subset, then f on every test row
        return training_work(self.task.recipe, n_train * self.lds.alpha) + n_test

    def stored_bytes(self, n_train, n_test, model_bytes):
        return 4 * n_test  # f on the test set, float32

    @property
    def seed(self) -> int:
        return derive_seed("lds-model", self.lds.seed, self.subset, self.replicate)


def task_models(task: Task, count: int, base_seed: int = 0) -> tuple[TrainModel, ...]:
    """A configuration's ``count`` ensemble models: the task's own checkpoints imported
    when it gives them, else trained from scratch, each on its random half."""
    if task.checkpoints() is not None:
        return tuple(ImportModel(task, i) for i in range(count))
    return tuple(TrainModel(task, i, base_seed) for i in range(count))
