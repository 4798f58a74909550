"""Intermediate checkpoints as members (appendix F.2): the last C kept checkpoints of
each of I training runs."""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, checkpoint_epochs, register_ensemble
from raytda.specs import Member


@register_ensemble
class Checkpoints(EnsembleKind):
    name = "checkpoints"
    takes = frozenset({"C"})

    def members(self, ens, epochs):
        return tuple(Member(i, c) for i in range(ens.I) for c in checkpoint_epochs(ens, epochs))

    def stored_params(self, ens, per_model, per_adapter=0):
        return ens.I * ens.C * per_model  # every member checkpoint is kept

    def serve_time(self, ens, u):
        return ens.I * ens.C * u.serve
