"""The built-in architectures; each built-in Task (:mod:`raytda.tasks`) builds its own."""

from __future__ import annotations

from raytda.models.gpt import GPT
from raytda.models.mlp import MLP

__all__ = ["GPT", "MLP"]
