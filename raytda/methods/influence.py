"""Influence functions: g(train)^T (H + damping I)^-1 g(test), H^-1 g by conjugate
gradients on Hessian-vector products of the Task's training loss."""

from __future__ import annotations

from raytda.methods.base import AttributionMethod, register_method


@register_method
class InfluenceFunction(AttributionMethod):
    name = "if"
    params = ("damping", "cg_max_iter", "cg_tol", "hessian_samples")
    revision = 1  # 1: CG stops a column at non-positive curvature (core/influence.py)

    def member(self, spec, net, data, mask, seed, args, task):
        from raytda.core.influence import influence_block

        block, info = influence_block(net, data, mask, spec.damping, spec.cg_max_iter,
                                      spec.cg_tol, spec.hessian_samples, args, task.output(),
                                      task.loss)
        return {"block": block}, info
