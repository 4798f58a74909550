"""A model raytda has never seen, brought as a Task: every ensemble kind of the paper with
TRAK, Grad-Cos and IF through ``Sweep``, on the in-process and the Ray executor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from raytda import LDSSpec, Recipe, Sweep, Task
from raytda.methods import Method

PROJ = Method("trak", proj_dim=16)
ALL_METHODS = (PROJ, Method("grad-cos"), Method("if", damping=1e-2))
ENSEMBLES = ("naive:I=2", "dropout:I=1,D=3", "dropout:I=1,D=2,mask_mode=per-sample",
             "checkpoints:I=1,C=3")
TRAK_ONLY = ("dropout-forward:I=1,D=3",)
LDS = LDSSpec(m=4)


class GatedNet(nn.Module):
    """Gated residual block with LayerNorm and two nn.Dropout modules: nothing like
    raytda's own MLP or GPT, and no ``masks`` argument anywhere."""

    def __init__(self, d_in: int = 6, width: int = 12, classes: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.gate = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.drop_a = nn.Dropout(0.2)
        self.drop_b = nn.Dropout(0.1)
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop_a(torch.tanh(self.inp(x)))
        h = h + torch.sigmoid(self.gate(h)) * h
        return self.out(self.drop_b(self.norm(h)))


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 6, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.randint(0, 3, (n,), generator=gen)
    return centres[y] + torch.randn(n, 6, generator=gen), y


class GatedTask(Task):
    name = "gated-blobs"
    version = "1"
    recipe = Recipe(optimizer="adam", lr=0.02, batch_size=8, epochs=6, checkpoint_epochs=(2, 4))

    def build_model(self) -> nn.Module:
        return GatedNet()

    def train_data(self):
        return blobs(32, 0)

    def test_data(self):
        return blobs(6, 1)


class BlobDataset(torch.utils.data.Dataset):
    """The same samples as GatedTask, as a map-style Dataset read through a DataLoader."""

    def __init__(self, n: int, seed: int) -> None:
        self.x, self.y = blobs(n, seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class GatedDatasetTask(GatedTask):
    name = "gated-blobs-dataset"

    def train_data(self):
        return BlobDataset(32, 0)

    def test_data(self):
        return BlobDataset(6, 1)


def run_all(store, executor="local", task: Task | None = None):
    task = task or GatedTask()
    main = Sweep(task, ALL_METHODS, ENSEMBLES, lds=LDS, store=str(store), executor=executor,
                 progress=False)
    fwd = Sweep(task, PROJ, TRAK_ONLY, lds=LDS, store=str(store), executor=executor,
                progress=False)
    if executor != "local":
        for s in (main, fwd):
            s._executor = executor
    return main, main.run(), fwd, fwd.run()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("user-task"))


def test_every_kind_and_method_runs_on_a_user_model(local_run):
    main, df, _, fwd_df = local_run
    assert len(df) == len(ALL_METHODS) * len(ENSEMBLES) and len(fwd_df) == 1
    assert set(df["method"]) == {"trak", "grad-cos", "if"}
    assert np.isfinite(df["lds"]).all() and np.isfinite(fwd_df["lds"]).all()
    by = {(r.method, r.label): r for r in df.itertuples()}
    assert by[("trak", "dropout I=1 D=3")].n_members == 3
    assert by[("if", "checkpoints I=1 C=3")].n_members == 3
    assert fwd_df.iloc[0].n_members == 1 and fwd_df.iloc[0].n_q_members == 3
    s = main.scores("dropout:I=1,D=3", "trak")
    assert s.shape == (6, 32) and torch.isfinite(s).all()


def test_dropout_sites_come_from_the_models_own_modules(local_run):
    """Masks change a member; the two nn.Dropout modules are the two sites."""
    main, *_ = local_run
    net = GatedTask().network(GatedNet())
    assert [s.name for s in net.sites] == ["drop_a", "drop_b"]
    assert net.mask_rates == (0.2, 0.1)
    dropout = main.scores("dropout:I=1,D=3", "grad-cos")
    naive = main.scores("naive:I=2", "grad-cos")
    assert not torch.allclose(dropout, naive)


def test_a_dataset_read_through_a_dataloader_gives_the_same_scores(local_run, tmp_path):
    main, *_ = local_run
    other = Sweep(GatedDatasetTask(), PROJ, ["dropout:I=1,D=2,mask_mode=per-sample"], lds=LDS,
                  store=str(tmp_path), progress=False)
    other.run()
    a = main.scores("dropout:I=1,D=2,mask_mode=per-sample", "trak")
    b = other.scores("dropout:I=1,D=2,mask_mode=per-sample", "trak")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.ray
def test_ray_executor_gives_identical_results(local_run, ray_session, tmp_path):
    from raytda.run.ray_executor import RayExecutor

    ex = RayExecutor(progress=False, shutdown=False)
    main, df, fwd, fwd_df = local_run
    r_main, r_df, r_fwd, r_fwd_df = run_all(tmp_path, ex)
    assert ex.stats["ran"] > 0  # the jobs really ran on Ray workers
    assert dict(zip(r_df["key"], r_df["lds"])) == dict(zip(df["key"], df["lds"]))
    assert list(r_fwd_df["lds"]) == list(fwd_df["lds"])
    # Measured spread between the executors: 0 (bit-identical scores for every kind and
    # method). Both run each job with torch threads = its CPU reservation (1 here) and the
    # CPU BLAS is a fixed rule (raytda.core.gemm), so nothing about a run's timing or load
    # can change a bit; a difference here is a real divergence, not rounding.
    for label in ENSEMBLES:
        torch.testing.assert_close(r_main.scores(label, "trak"), main.scores(label, "trak"),
                                   rtol=0, atol=0)


class OwnTrainerTask(GatedTask):
    """A Task that trains with its own loop (full-batch LBFGS) and no recipe."""

    name = "gated-own-trainer"
    recipe = None
    calls: list = []

    def train(self, model, data, seed, device, recipe=None):
        x, y = data.tensors()
        opt = torch.optim.LBFGS(model.parameters(), max_iter=15)
        model.train()

        def closure():
            opt.zero_grad()
            loss = self.loss(self.forward(model, x), y)
            loss.backward()
            return loss

        opt.step(closure)
        type(self).calls.append((seed, len(x)))
        return {}  # raytda snapshots the final weights itself


def test_a_tasks_own_train_function_replaces_the_recipe(tmp_path):
    OwnTrainerTask.calls.clear()
    sweep = Sweep(OwnTrainerTask(), PROJ, ["naive:I=2", "dropout:I=1,D=2"], lds=LDSSpec(m=3),
                  store=str(tmp_path), progress=False)
    df = sweep.run()
    assert np.isfinite(df["lds"]).all()
    # 2 ensemble models on their halves (16 rows), 3 LDS models on alpha n = 16 rows.
    assert sorted(n for _, n in OwnTrainerTask.calls) == [16] * 5
    assert len({s for s, _ in OwnTrainerTask.calls}) == 5


def test_the_tasks_key_enters_every_artifact_key():
    from raytda.plan.models import TrainModel

    class V2(GatedTask):
        version = "2"

    class Wider(GatedTask):
        def config(self):
            return {"width": 24}

    keys = {TrainModel(t(), 0).key for t in (GatedTask, V2, Wider)}
    assert len(keys) == 3
    assert TrainModel(GatedTask(), 0).key == TrainModel(GatedTask(), 0).key
