"""A user task file whose evaluation fails part way, for the failed-job tests: a tiny
task, and a method registered at import (as a ``--task`` file may register its own) that
scores like Grad-Dot but raises on test row 2, after the score chunks of rows 0 and 1
are in the store (one row per chunk under a tiny ``--memory-budget``)."""

from __future__ import annotations

import torch
from torch import nn

from raytda import Recipe
from raytda import Task as RaytdaTask
from raytda.methods import register_method
from raytda.methods.grad_dot import GradDot

#: the test row whose scoring fails (rows before it are written as chunks first)
FAILING_ROW = 2


class Task(RaytdaTask):
    """Six features, three classes, a small MLP: trains in well under a second."""

    name = "tiny-failing-eval"
    version = "1"
    recipe = Recipe(optimizer="adam", lr=1e-2, batch_size=16, epochs=2)

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def _samples(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
        return x, x[:, :3].argmax(1)

    def train_data(self):
        return self._samples(32, 0)

    def test_data(self):
        return self._samples(6, 1)


class BreaksAtRow(GradDot):
    """Grad-Dot whose scoring of test row ``FAILING_ROW`` raises, as a bug would."""

    name = "breaks-at-row"

    def score_rows(self, payload: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
        if rows.start <= FAILING_ROW < rows.stop:
            raise ValueError(f"cannot score test row {FAILING_ROW}")
        return super().score_rows(payload, rows)


register_method(BreaksAtRow)
