"""Model architectures."""

from __future__ import annotations

from torch import nn

from raytda.models.mlp import MLP
from raytda.specs import ModelSpec


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the architecture a ModelSpec names."""
    if spec.arch == "gpt":
        from raytda.models.gpt import GPT

        return GPT(spec)
    return MLP(spec)


__all__ = ["MLP", "build_model"]
