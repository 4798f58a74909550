"""EK-FAC influence functions: g(test)^T (F + damping I)^-1 g(train), F the EK-FAC
approximation (per-layer Kronecker factors, eigen-corrected; :mod:`raytda.core.ekfac`) of
the curvature of the Task's training loss over the member's own training rows, as IF
(``if``) takes its Gauss-Newton curvature, and g the gradients of the Task's output f.

Only layers EK-FAC factors (Linear, Conv1D, Conv2d, LoRA adapters, untied embeddings)
enter the scores; the others (an embedding tied to an output head among them) are listed
in the member's metadata (``uncovered``) and in the results (``ekfac_uncovered``).

The factors are an artifact of their own (:class:`FitFactors`, declared per member by
``member_jobs``): keyed by the member (its model, checkpoint, mask or adapter), its mask
mode and what the fit reads of the Method (``hessian_samples``, ``fisher``), not by
``damping``, so every configuration over the member (naive I=1 and I=3 share model 0's;
two dampings share all) reads one fit, and its cost is charged once to each.

Dropout members: the factors are fitted on the masked member itself (its mask applied
in both fitting passes, per-sample masks keyed by train row as for its gradients), so the
curvature is that of the sub-network whose gradients are scored. A fit on the base model
(``mask=None`` in :func:`fit_factors`) could serve every masked member of a model at the
cost of one fit, but its curvature is then of another network; what that costs in LDS is
measured in ``benchmarks/ekfac_figure6.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from raytda.methods.base import AttributionMethod, register_method
from raytda.plan.job import Job

if TYPE_CHECKING:
    import torch

    from raytda.core.args import ComputeArgs
    from raytda.plan.members import MemberBlock
    from raytda.store import ArtifactStore


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


@dataclass(frozen=True, repr=False)
class FitFactors(Job):
    """One member's EK-FAC factors (:func:`fit_factors`), stored once and read by every
    configuration that scores the member with EK-FAC. ``block``: a member job that reads
    them; only its member, mask mode and the fit's Method fields enter the key."""

    block: MemberBlock
    kind: str = field(default="ekfac-factors", init=False)
    # 1: untied embeddings are factored (before, they were left out of the factors)
    revision = 1

    @property
    def task(self):  # type: ignore[override]
        return self.block.task

    def spec(self) -> dict[str, Any]:
        b, m = self.block, self.block.method
        return {"model": b.model.key, "member": replace(b.member, projection=0).to_dict(),
                "mask_mode": b.mask_mode if b.member.mask is not None else None,
                "hessian_samples": m.hessian_samples, "fisher": m.fisher}

    def deps(self) -> tuple[Job, ...]:
        return self.block.model.member_deps()

    def affinity(self) -> str | None:
        return self.block.model.key

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return 2 * 3.0 * n_train  # two passes over the rows (covariances, then eigenvalues)

    def describe(self) -> str:
        from raytda.plan.members import member_label

        return f"EK-FAC factors of {member_label(self.block.member)} of {self.task.name}"

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.serve import serving

        b = self.block
        data = b.task.data()
        rows = b.model.training_rows(data.n_train)
        with serving(b, store, args) as (net, mask, m):
            factors, info = fit_factors(net, b.task, data, mask, rows, b.method, args)
        store.put(self.key, factors, {"serve_time_s": m.seconds, "serve_wall_s": m.wall_s,
                                      "peak_bytes": m.peak_bytes, **info}, self.spec())


@register_method
class EKFACInfluence(AttributionMethod):
    name = "ekfac"
    params = ("damping", "hessian_samples", "fisher")
    # 1: untied embeddings enter the scores (before, they were left out)
    revision = 1
    uses_training_rows = True

    def member_jobs(self, spec, block):
        return {"factors": FitFactors(block)}

    def member(self, spec, ctx):
        block, info = ekfac_block(ctx.net, ctx.output, ctx.data, ctx.mask,
                                  ctx.inputs["factors"], spec.damping, ctx.args)
        return {"block": block}, info

    def result_columns(self, spec, member_meta: list[dict[str, Any]]) -> dict[str, Any]:
        """Which trainable parameters EK-FAC left out (the same for every member)."""
        uncovered = member_meta[0]["uncovered"] if member_meta else []
        return {"ekfac_uncovered": ",".join(u["name"] for u in uncovered),
                "ekfac_n_params_uncovered": sum(u["n_params"] for u in uncovered)}
