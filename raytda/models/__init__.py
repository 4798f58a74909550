"""The built-in architectures, built from a ModelSpec by its ``arch``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from raytda.models.gpt import GPT
from raytda.models.mlp import MLP
from raytda.specs import ModelSpec

BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "mlp": lambda s: MLP(s.in_dim, s.hidden, s.out_dim, s.dropout),
    "gpt": lambda s: GPT(s.vocab, s.n_layer, s.n_head, s.d_model, s.block_size, s.dropout),
}


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the architecture a ModelSpec names."""
    return BUILDERS[spec.arch](spec)


__all__ = ["GPT", "MLP", "build_model"]
