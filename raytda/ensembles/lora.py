"""LoRA Ensemble: I base models trained on the full set (shorter), L LoRA adapters per
base model, each fine-tuned on its own random half; gradients over the adapter only."""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.specs import Member, _check


@register_ensemble
class LoRA(EnsembleKind):
    name = "lora"
    takes = frozenset({"L"})
    uses_lora = True

    def check(self, ens):
        super().check(ens)
        _check(ens.L >= 1, f"L (LoRA adapters per base model) must be an integer >= 1, got "
                           f"{ens.L!r}; write e.g. 'lora:I=1,L=3'")

    def members(self, ens, epochs):
        return tuple(Member(i, adapter=a) for i in range(ens.I) for a in range(ens.L))

    def train_time(self, ens, u):
        # I x T_Train,Base + I x L x T_Train,LoRA
        return ens.I * u.train + ens.I * ens.L * u.train_lora

    def stored_params(self, ens, per_model, per_adapter=0):
        return ens.I * per_model + ens.I * ens.L * per_adapter

    def serve_time(self, ens, u):
        return ens.I * ens.L * u.serve
