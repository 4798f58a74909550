"""Checkpoint members with D dropout masks each (C x D members per training run)."""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, checkpoint_epochs, register_ensemble
from raytda.specs import Member


@register_ensemble
class CheckpointsDropout(EnsembleKind):
    name = "checkpoints-dropout"
    takes = frozenset({"C", "D", "mask_mode"})
    uses_masks = True

    def members(self, ens, epochs):
        return tuple(Member(i, c, d, d) for i in range(ens.I)
                     for c in checkpoint_epochs(ens, epochs) for d in range(ens.D))

    def stored_params(self, ens, per_model, per_adapter=0):
        return ens.I * ens.C * per_model  # every member checkpoint is kept

    def serve_time(self, ens, u):
        return ens.I * ens.C * ens.D * u.serve
