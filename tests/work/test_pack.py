"""Training jobs trained as one stacked pack store what each job stores alone: same keys,
the same tensors bit for bit (as tests/core/test_stacked.py measures for the core), their
train time as a share of the pack's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.ensembles.lora import TrainAdapter, TrainBase
from raytda.plan.models import LDSModel, TrainModel
from raytda.specs import LDSSpec
from raytda.store import ArtifactStore
from raytda.tasks import get_task
from raytda.work.train import train_pack

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def alone_and_packed(jobs, tmp_path):
    """Each job run by itself into one store, and all as one pack into another."""
    args = ComputeArgs()
    alone, packed = ArtifactStore(str(tmp_path / "a")), ArtifactStore(str(tmp_path / "p"))
    for job in jobs:
        for dep in job.deps():  # e.g. a LoRA base model: the same in both stores
            dep.run(alone, args)
            dep.run(packed, args)
        job.run(alone, args)
    train_pack(jobs, packed, args)
    return alone, packed


def check(jobs, alone, packed):
    for job in jobs:
        a_t, a_meta = alone.get(job.key)
        p_t, p_meta = packed.get(job.key)
        assert same(a_t, p_t)
        assert p_meta["packed"] == len(jobs) and "packed" not in a_meta
        assert p_meta["train_time_s"] == pytest.approx(p_meta["pack_train_time_s"] / len(jobs))
        assert set(a_meta) <= set(p_meta)  # every field the single job records


def test_lds_pack_stores_what_each_lds_job_stores(tmp_path):
    task = get_task("toy-mlp")
    jobs = [LDSModel(task, LDSSpec(m=4, alpha=0.5, seed=1), j) for j in range(4)]
    check(jobs, *alone_and_packed(jobs, tmp_path))


def test_ensemble_model_pack_keeps_every_checkpoint(tmp_path):
    task = get_task("toy-mlp")
    jobs = [TrainModel(task, i) for i in range(3)]
    alone, packed = alone_and_packed(jobs, tmp_path)
    check(jobs, alone, packed)
    assert packed.meta(jobs[0].key)["checkpoints"] == alone.meta(jobs[0].key)["checkpoints"]


def test_adapter_pack_on_one_base(tmp_path):
    task = get_task("toy-gpt")
    base = TrainBase(task, 0)
    jobs = [TrainAdapter(base, a) for a in range(2)]
    check(jobs, *alone_and_packed(jobs, tmp_path))


def test_pack_keys_group_compatible_jobs_only():
    toy, digits = get_task("toy-mlp"), get_task("digits-mlp")
    lds = LDSSpec(m=5, alpha=0.5)
    jobs = [*(LDSModel(toy, lds, j) for j in range(5)), TrainModel(toy, 0),
            LDSModel(digits, lds, 0), TrainBase(toy, 0), TrainModel(toy, 1)]
    keys = [j.pack_key() for j in jobs]
    assert len(set(keys[0:5])) == 1  # one task's LDS models of one subset fraction
    assert keys[5] == keys[8] != keys[0]  # naive members of one task, not with LDS models
    assert keys[6] not in (keys[0], keys[5])  # another task's data
    assert keys[7] is None  # full-set base models train alone
    assert keys[0] != LDSModel(toy, LDSSpec(m=5, alpha=0.3), 0).pack_key()
    with pytest.raises(ValueError, match="cannot share a pack"):
        train_pack([jobs[0], jobs[5]], None, ComputeArgs())


class _Jitter(nn.Module):
    """Noise drawn in the forward outside nn.Dropout: a stream stacking cannot match."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.randn_like(x) if self.training else x


def _tiny_task_class() -> type:
    """tests/store/tiny_task.py's TinyTask (6 features, 3 classes), loaded by path."""
    path = Path(__file__).resolve().parents[1] / "store" / "tiny_task.py"
    spec = importlib.util.spec_from_file_location("tiny_task", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TinyTask


class _UnstackableTask(_tiny_task_class()):
    """The tiny user Task with a model that cannot train stacked (``layer``: BatchNorm or
    noise in the forward)."""

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.name = f"unstackable-{layer}"

    def config(self) -> dict:
        return {"layer": self.layer}

    def build_model(self) -> nn.Module:
        middle = nn.BatchNorm1d(8) if self.layer == "batchnorm" else _Jitter()
        return nn.Sequential(nn.Linear(6, 8), middle, nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("layer", ["batchnorm", "noise"])
def test_a_pack_of_models_that_cannot_stack_trains_them_one_by_one(tmp_path, layer):
    # Packing is the default, so a model stacking cannot reproduce (BatchNorm's running
    # statistics are found before training, a random op in the forward at the first step)
    # must still train, each model exactly as alone, and not as a failed job.
    task = _UnstackableTask(layer)
    jobs = [LDSModel(task, LDSSpec(m=3, alpha=0.5, seed=1), j) for j in range(3)]
    alone, packed = alone_and_packed(jobs, tmp_path)
    for job in jobs:
        (a_t, _), (p_t, p_meta) = alone.get(job.key), packed.get(job.key)
        assert same(a_t, p_t)  # each run alone, seeded as alone: bit for bit
        assert "packed" not in p_meta
