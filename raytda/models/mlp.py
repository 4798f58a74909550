"""The paper's MLP: Linear-ReLU-Dropout per hidden layer, then a linear head.

Dropout can be driven three ways: ``nn.Dropout`` semantics in training (masks=None,
train mode); off (masks=None, eval mode); or explicit masks passed to ``forward``, which is
how ensemble members get a fixed sub-network that is identical for every sample.
"""

from __future__ import annotations

import torch
from torch import nn

from raytda.specs import ModelSpec


class MLP(nn.Module):
    """``in -> hidden[0] -> ... -> out`` with a dropout site after each hidden layer."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dims = (spec.in_dim, *spec.hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], spec.out_dim)
        self.rate = spec.dropout
        self.drop = nn.Dropout(spec.dropout)

    @property
    def mask_sizes(self) -> tuple[int, ...]:
        """Width of each dropout site, in order."""
        return tuple(layer.out_features for layer in self.hidden)

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Logits. ``masks[s]`` is a 0/1 tensor of shape (width,) or (batch, width)."""
        h = x
        for s, layer in enumerate(self.hidden):
            h = torch.relu(layer(h))
            if masks is None:
                h = self.drop(h)
            else:
                h = h * masks[s] / (1.0 - self.rate)
        return self.head(h)


def build_model(spec: ModelSpec) -> MLP:
    """Instantiate the architecture a ModelSpec names."""
    return MLP(spec)
