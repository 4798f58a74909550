"""EK-FAC influence functions: g(test)^T (F + damping I)^-1 g(train), F the EK-FAC
approximation (per-layer Kronecker factors, eigen-corrected; :mod:`raytda.core.ekfac`) of
the curvature of the Task's training loss over the member's own training rows, as IF
(``if``) takes its Gauss-Newton curvature, and g the gradients of the Task's output f.

Only layers EK-FAC factors (Linear, Conv1D, Conv2d, LoRA adapters) enter the scores; the
others are listed in the member's metadata (``uncovered``) and in the results
(``ekfac_uncovered``).

Dropout members: the factors are fitted on the masked member itself (its mask applied
in both fitting passes, per-sample masks keyed by train row as for its gradients), so the
curvature is that of the sub-network whose gradients are scored. A fit on the base model
(``mask=None`` in :func:`fit_factors`) could serve every masked member of a model at the
cost of one fit, but its curvature is then of another network; what that costs in LDS is
measured in ``benchmarks/ekfac_figure6.py``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from raytda.methods.base import AttributionMethod, register_method


def fit_factors(net, task, data, mask, training_rows, spec, args
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One member's EK-FAC factors (a dict of tensors, storable as an artifact) and what
    they were fitted on: the Task's loss over the member's training rows (at most
    ``spec.hessian_samples`` of them), ``mask`` applied (None: the base model), labels as
    ``spec.fisher`` says. Depends on the member's weights, mask and rows, the Task's loss,
    and ``spec.hessian_samples`` / ``spec.fisher``: nothing else of the Method."""
    from raytda.core.ekfac import EKFAC
    from raytda.core.influence import curvature_rows

    rows = curvature_rows(data.n_train, training_rows, spec.hessian_samples)
    samples = data.train if len(rows) == data.n_train else data.train.subset(rows)
    start = time.perf_counter()
    ek = EKFAC(net, device=args.device)
    factors = ek.fit(samples, task.loss, mask=mask, rows=rows, batch_size=args.grad_batch,
                     fisher=spec.fisher)
    return factors, {"ekfac_fit_s": time.perf_counter() - start, "curvature_rows": len(rows),
                     "fisher": spec.fisher, "factors_on_mask": mask is not None}


def ekfac_block(net, output, data, mask, factors, damping, args
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """(m x n) scores of a member from its factors, and what they cover."""
    from raytda.core.ekfac import EKFAC

    start = time.perf_counter()
    ek = EKFAC(net, device=args.device)
    block = ek.scores(factors, data.test, data.train, output, damping=damping, mask=mask,
                      batch_size=args.grad_batch)
    return block.float(), {**ek.describe(), "damping": damping,
                           "ekfac_score_s": time.perf_counter() - start}


@register_method
class EKFACInfluence(AttributionMethod):
    name = "ekfac"
    params = ("damping", "hessian_samples", "fisher")
    uses_training_rows = True

    def member(self, spec, ctx):
        # Fitted here for now; the factors depend on less than the scores do (see
        # fit_factors), so they can become an artifact shared by configurations.
        factors, fit_info = fit_factors(ctx.net, ctx.task, ctx.data, ctx.mask,
                                        ctx.training_rows, spec, ctx.args)
        block, info = ekfac_block(ctx.net, ctx.output, ctx.data, ctx.mask, factors,
                                  spec.damping, ctx.args)
        return {"block": block}, {**fit_info, **info}

    def result_columns(self, spec, member_meta: list[dict[str, Any]]) -> dict[str, Any]:
        """Which trainable parameters EK-FAC left out (the same for every member)."""
        uncovered = member_meta[0]["uncovered"] if member_meta else []
        return {"ekfac_uncovered": ",".join(u["name"] for u in uncovered),
                "ekfac_n_params_uncovered": sum(u["n_params"] for u in uncovered)}
