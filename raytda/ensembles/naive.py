"""Naive independent ensemble: I models, each trained from scratch on its own random half."""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.specs import Member


@register_ensemble
class Naive(EnsembleKind):
    name = "naive"

    def members(self, ens, epochs):
        return tuple(Member(i) for i in range(ens.I))

    def serve_time(self, ens, u):
        return ens.I * u.serve
