"""Dropout Ensemble: D fixed dropout masks (sub-networks) of each of I trained models.

Member (i, d) uses mask d and projection seed d, so the d-th projection-only member of a
model shares its projection with the d-th dropout member.
"""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.specs import Member


@register_ensemble
class Dropout(EnsembleKind):
    name = "dropout"
    takes = frozenset({"D", "mask_mode"})
    uses_masks = True

    def members(self, ens, epochs):
        return tuple(Member(i, None, d, d) for i in range(ens.I) for d in range(ens.D))

    def serve_time(self, ens, u):
        return ens.I * ens.D * u.serve
