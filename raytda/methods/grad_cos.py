"""Grad-Cos: cosines of full per-sample gradients, averaged over members."""

from __future__ import annotations

from raytda.methods.base import register_method
from raytda.methods.grad_dot import GradDot


@register_method
class GradCos(GradDot):
    name = "grad-cos"
    normalize = True
