"""The paper's MLP: Linear-ReLU-Dropout per hidden layer, then a linear head.

Its dropout is a plain ``nn.Dropout``; ensemble members drive it with explicit masks
through :class:`raytda.core.network.Network`, like any user's model. One module serves
every hidden layer, so its sites are its calls in layer order.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """``in_dim -> hidden[0] -> ... -> out_dim`` with a dropout site after each hidden layer."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, dropout: float) -> None:
        super().__init__()
        dims = (in_dim, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], out_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_dim) features -> (batch, out_dim) logits."""
        h = x
        for layer in self.hidden:
            h = self.drop(torch.relu(layer(h)))
        return self.head(h)
