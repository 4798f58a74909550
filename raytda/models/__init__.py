"""Model architectures."""

from raytda.models.mlp import MLP, build_model

__all__ = ["MLP", "build_model"]
