"""The paper's ablation: D projection seeds of each unmasked model, dropout off."""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.specs import Member


@register_ensemble
class ProjectionOnly(EnsembleKind):
    name = "projection-only"
    takes = frozenset({"D"})
    needs = frozenset({"projection"})

    def members(self, ens, epochs):
        return tuple(Member(i, None, None, d) for i in range(ens.I) for d in range(ens.D))

    def serve_time(self, ens, u):
        # D projections of one unmasked model share one Q pass.
        return ens.I * ens.D * (u.serve - u.serve_forward_only) + ens.I * u.serve_forward_only
