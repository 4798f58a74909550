"""Influence functions: g(train)^T (C + damping I)^-1 g(test), C the Gauss-Newton matrix
(default) or the exact Hessian of the Task's training loss over the member's own training
rows, C^-1 g by conjugate gradients (``raytda.core.influence``)."""

from __future__ import annotations

from typing import Any

from raytda.methods.base import AttributionMethod, register_method


@register_method
class InfluenceFunction(AttributionMethod):
    name = "if"
    params = ("damping", "cg_max_iter", "cg_tol", "hessian_samples", "curvature")
    # 1: CG stops a column at non-positive curvature; 2: Gauss-Newton curvature by
    # default, over the member's training rows instead of the whole train split
    revision = 2
    uses_training_rows = True
    # the curvature products act on parameter-space vectors
    needs_exact_gradients = True

    def member(self, spec, ctx):
        from raytda.core.influence import influence_block

        fz = ctx.featurizer(None)
        block, info = influence_block(ctx.net, ctx.data, ctx.mask, spec.damping,
                                      spec.cg_max_iter, spec.cg_tol, spec.hessian_samples,
                                      ctx.args, ctx.task.loss, spec.curvature,
                                      ctx.training_rows, fz.batches)
        return {"block": block}, info

    def result_columns(self, spec, member_meta: list[dict[str, Any]]) -> dict[str, Any]:
        """The worst CG solve over the members: the configuration converged only if every
        member's solve reached ``cg_tol`` without meeting non-positive curvature."""
        return {
            "if_curvature": spec.curvature,
            "if_cg_iterations": max(m["cg_iterations"] for m in member_meta),
            "if_cg_max_rel_residual": max(m["cg_max_rel_residual"] for m in member_meta),
            "if_negative_curvature_columns": sum(m["cg_negative_curvature_columns"]
                                                 for m in member_meta),
            "if_converged": all(m["cg_converged"] for m in member_meta),
        }
