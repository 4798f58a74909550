"""LoRA Ensemble: I base models trained on the full set (shorter), L LoRA adapters per
base model, each fine-tuned on its own random half; gradients over the adapter only.

A task that gives its own checkpoints (``Task.checkpoints()``) gives the base models:
adapter ``a`` of base ``i`` is fine-tuned on the last checkpoint of run ``i``, and no base
is trained (the configuration's training time is its adapters')."""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.specs import Member, _check


@register_ensemble
class LoRA(EnsembleKind):
    name = "lora"
    takes = frozenset({"L"})

    def check(self, ens):
        super().check(ens)
        _check(ens.L >= 1, f"L (LoRA adapters per base model) must be an integer >= 1, got "
                           f"{ens.L!r}; write e.g. 'lora:I=1,L=3'")

    def check_task(self, ens, task):
        what = "LoRA adapters" if task.checkpoints() is not None \
            else "base models and LoRA adapters"
        _check(task.lora is not None and task.recipe is not None,
               f"ensemble kind {self.name!r} trains {what}: task {task.name!r} needs a "
               f"recipe and Task.lora (with its target modules)")

    def check_model(self, ens, task, net):
        names = {n.rsplit(".", 1)[-1] for n, _ in net.module.named_modules()}
        missing = [t for t in task.lora_spec.targets if t not in names]
        _check(not missing, f"task {task.name!r}: LoRA targets {missing} are not modules of "
                            f"its model; set Task.lora = LoRASpec(targets=(...)) to module names")

    def members(self, ens, epochs):
        return tuple(Member(i, adapter=a) for i in range(ens.I) for a in range(ens.L))

    # Base models on the full set (or the user's checkpoints); each member is an adapter
    # on one of them.
    def models(self, ev):
        from raytda.plan.jobs import ImportModel, TrainBase

        if ev.task.checkpoints() is not None:
            return tuple(ImportModel(ev.task, i) for i in range(ev.ensemble.I))
        return tuple(TrainBase(ev.task, i, ev.base_seed) for i in range(ev.ensemble.I))

    def adapters(self, ev, models):
        from raytda.plan.jobs import TrainAdapter

        return tuple(TrainAdapter(b, a) for b in models for a in range(ev.ensemble.L))

    def source(self, models, member):
        from raytda.plan.jobs import TrainAdapter

        return TrainAdapter(models[member.model], member.adapter)

    def train_time(self, ens, u):
        # I x T_Train,Base + I x L x T_Train,LoRA
        return ens.I * u.train + ens.I * ens.L * u.train_lora

    def stored_params(self, ens, per_model, per_adapter=0):
        return ens.I * per_model + ens.I * ens.L * per_adapter

    def serve_time(self, ens, u):
        return ens.I * ens.L * u.serve
