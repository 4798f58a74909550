"""LoRA adapters (peft) for the LoRA Ensemble: attach, fine-tune, store, reload.

A LoRA member is a base model (trained on the full training set) plus one adapter
fine-tuned on a random half. The adapter is low-rank updates ``B A`` (rank r, scaled by
alpha / r, B initialized to zero) on the modules named in ``LoRASpec.targets`` (W_q and W_v
of every attention layer), plus the trainable biases peft's ``bias`` option selects.

Why ``bias='lora_only'``: the paper's adapters have "trainable biases". peft's 'lora_only'
trains the biases of the adapted layers (q_proj, v_proj) only, so everything an adapter
changes lives inside the modules it adapts, and the adapter's state (what is stored and
what gradients are taken over) is A, B and those biases. 'all' would also train every
other bias in the network (k/out projections, MLP, LayerNorm), making the "adapter" touch
every layer; the paper's space costs (Table 6: about r * (d_in + d_out) per adapted
matrix) show their adapters are essentially the low-rank factors.

Adapters are stored in peft's own state-dict format (``get_peft_model_state_dict``: the
adapter weights only, never the base weights) and saved as safetensors by the artifact
store.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from raytda.core.network import Forward, call_module
from raytda.core.outputs import LossFn, mean_cross_entropy
from raytda.core.train import fit
from raytda.specs import LoRASpec, Recipe, derive_seed


@dataclass
class TrainedAdapter:
    """An adapter's weights (peft format), its parameter count and training cost (CPU or
    device seconds)."""

    state: dict[str, torch.Tensor]
    n_params: int
    train_time_s: float


def lora_config(spec: LoRASpec):
    """The peft LoraConfig a LoRASpec describes."""
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      bias=spec.bias, target_modules=list(spec.targets))


def attach_adapter(model: nn.Module, spec: LoRASpec, seed: int | None = None):
    """Wrap ``model`` in a peft model with one fresh adapter (modifies ``model`` in place).

    Only the adapter is left trainable. ``seed`` fixes the random init of the A matrices
    (peft draws them from the global RNG).
    """
    from peft import get_peft_model

    if seed is not None:
        torch.manual_seed(derive_seed("lora-init", seed))
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in spec.targets if t not in names]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not modules of {type(model).__name__}; "
                         f"it has e.g. {sorted(n for n in names if n.endswith('proj'))}")
    return get_peft_model(model, lora_config(spec))


def inner(peft_model) -> nn.Module:
    """The adapted network itself (our model class with LoRA layers inside), which takes
    the same forward arguments (e.g. ``masks``) as the bare model."""
    return peft_model.base_model.model


def adapter_state(peft_model) -> dict[str, torch.Tensor]:
    """The adapter's weights only (peft's checkpoint format), detached on the CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def train_adapter(base: nn.Module, spec: LoRASpec, recipe: Recipe, samples, seed: int,
                  device: str = "cpu", loss_fn: LossFn = mean_cross_entropy,
                  forward: Forward = call_module) -> TrainedAdapter:
    """Fine-tune one fresh adapter on ``samples`` on top of ``base``, whose weights stay
    frozen (``base`` is modified: it ends up holding the adapter's LoRA layers).

    ``recipe`` is the adapter's (see ``LoRASpec.adapter_recipe``); the base model's dropout
    sites stay active during fine-tuning as in its own training. Deterministic in ``seed``.
    """
    peft_model = attach_adapter(base, spec, seed).to(device)
    # The seed's shuffling and dropout streams come from fit, as for base training.
    states, seconds = fit(inner(peft_model), recipe, samples, seed, device,
                          snapshot=lambda _m: adapter_state(peft_model), loss_fn=loss_fn,
                          forward=forward)
    n_par = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return TrainedAdapter(states[recipe.epochs], n_par, seconds)


def load_adapted(base: nn.Module, adapter: dict[str, torch.Tensor], spec: LoRASpec) -> nn.Module:
    """``base`` (holding the base weights) plus a stored adapter, in eval mode, with only
    the adapter trainable (so gradients and :func:`raytda.core.grads.n_trainable` cover
    the adapter alone)."""
    from peft import set_peft_model_state_dict

    from raytda.core.checkpoint import CheckpointError

    peft_model = attach_adapter(base, spec)
    expected = set(adapter_state(peft_model))
    if set(adapter) != expected:
        raise CheckpointError(f"adapter does not fit the model: missing "
                              f"{sorted(expected - set(adapter))}, unexpected "
                              f"{sorted(set(adapter) - expected)}")
    set_peft_model_state_dict(peft_model, adapter)
    return inner(peft_model).eval()


def train_adapters_stacked(base: nn.Module, spec: LoRASpec, recipe: Recipe, samples,
                           members, device: str = "cpu", loss_fn: LossFn = mean_cross_entropy,
                           forward: Forward = call_module) -> list[TrainedAdapter]:
    """Fine-tune one adapter per member (:class:`raytda.core.stacked.Member`: its rows of
    ``samples`` and its seed) on one frozen ``base``, all stacked: adapter i equals
    ``train_adapter(copy of base, spec, recipe, samples.subset(rows_i), seed_i)`` up to
    float rounding. The base's weights are shared by the pack, not copied per adapter;
    ``base`` is modified as ``train_adapter`` modifies it. Each adapter's train time is
    its share of the pack's loop."""
    import copy

    from raytda.core.stacked import StackedTrainer, trainable_state

    # Each adapter's init as train_adapter draws it: attach with its seed to the base.
    inits = [trainable_state(inner(attach_adapter(copy.deepcopy(base), spec, mb.seed)))
             for mb in members]
    peft_model = attach_adapter(base, spec).to(device)
    trainer = StackedTrainer(inner(peft_model), inits, recipe, device, loss_fn, forward)
    result = trainer.fit(samples, members, snapshot=lambda _m: adapter_state(peft_model))
    n_par = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return [TrainedAdapter(st[recipe.epochs], n_par, result.share_s) for st in result.states]
