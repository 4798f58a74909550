"""A tiny user Task (README's "Bring your own model", smaller) for the store tests, in a
file of its own so that a second sweep process loads it with ``--task path:TinyTask``."""

from __future__ import annotations

import torch
from torch import nn

from raytda import Recipe, Task


class TinyTask(Task):
    name = "tiny-store-test"
    version = "1"
    recipe = Recipe(optimizer="adam", lr=1e-2, batch_size=16, epochs=2)

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))

    def _samples(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
        return x, x[:, :3].argmax(1)

    def train_data(self):
        return self._samples(32, 0)

    def test_data(self):
        return self._samples(8, 1)


# The sweep both the tests and their subprocesses run: two configurations sharing a model.
ENSEMBLES = ("naive:I=1", "dropout:I=1,D=2")
LDS_M = 3
PROJ_DIM = 16


def cli_args(store: str, out: str) -> list[str]:
    """`raytda sweep|plan` arguments for that sweep on ``store``."""
    args = ["--task", f"{__file__}:TinyTask", "--method", "trak", "--lds-m", str(LDS_M),
            "--proj-dim", str(PROJ_DIM), "--store", store, "--out", out, "--executor",
            "local", "--quiet", "--device", "cpu"]
    for e in ENSEMBLES:
        args += ["--ensemble", e]
    return args


def sweep(store: str):
    """The same sweep through the Python API, in-process."""
    from raytda import LDSSpec, Sweep

    return Sweep(TinyTask(), ensembles=list(ENSEMBLES), lds=LDSSpec(m=LDS_M), store=store,
                 proj_dim=PROJ_DIM, executor="local", progress=False)
