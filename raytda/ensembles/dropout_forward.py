"""Dropout Ensemble, forward-only (TRAK): Q averaged over the I x D masked variants, the
gradient features of the I unmasked models, so masks cost forward passes only."""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.ensembles.dropout import Dropout
from raytda.specs import Member


@register_ensemble
class DropoutForward(EnsembleKind):
    name = "dropout-forward"
    takes = frozenset({"D", "mask_mode"})
    uses_masks = True
    needs = frozenset({"q"})

    def members(self, ens, epochs):
        return Dropout().members(ens, epochs)

    def feature_members(self, ens, epochs):
        return tuple(Member(i) for i in range(ens.I))

    def serve_time(self, ens, u):
        return ens.I * u.serve + ens.I * (ens.D - 1) * u.serve_forward_only
