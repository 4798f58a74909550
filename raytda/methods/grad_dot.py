"""Grad-Dot: inner products of full per-sample gradients, averaged over members."""

from __future__ import annotations

from raytda.methods.base import AttributionMethod, register_method


@register_method
class GradDot(AttributionMethod):
    name = "grad-dot"
    normalize = False

    def member(self, spec, net, data, mask, seed, args, task):
        from raytda.core.gradsim import gradsim_block

        return {"block": gradsim_block(net, data, mask, self.normalize, args, task.output())}, {}
