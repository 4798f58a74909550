"""Deterministic training from scratch on a subset, keeping intermediate checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raytda.models import build_model
from raytda.specs import ModelSpec, Recipe, derive_seed


@dataclass
class TrainedModel:
    """Weights at every saved epoch (``recipe.saved_epochs``) and the wall time it took."""

    states: dict[int, dict[str, torch.Tensor]]
    train_time_s: float
    final_epoch: int

    @property
    def final(self) -> dict[str, torch.Tensor]:
        return self.states[self.final_epoch]


def half_subset(n: int, seed: int, fraction: float = 0.5) -> np.ndarray:
    """Sorted indices of a random ``fraction * n`` subset (TRAK's recipe for members)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False))


def check_tokens(model_spec: ModelSpec, x: torch.Tensor, y: torch.Tensor) -> None:
    """A language model's data must fit its vocabulary and context; say so clearly if not."""
    if not model_spec.generative or x.numel() == 0:
        return
    from raytda.data import DataError

    top = int(max(x.max(), y.max()))
    if top >= model_spec.vocab:
        raise DataError(f"the data has token id {top} but the model's vocab is "
                        f"{model_spec.vocab}; raise ModelSpec.vocab to at least {top + 1}")
    if x.shape[-1] > model_spec.block_size:
        raise DataError(f"sequences of {x.shape[-1]} tokens exceed the model's block_size "
                        f"{model_spec.block_size}")


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, betas=recipe.betas,
                            weight_decay=recipe.weight_decay)


def warm_up(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One untimed forward/backward on a copy, so one-off library start-up (thread pools,
    kernel selection) is not billed to the first model a process trains."""
    import copy

    twin = copy.deepcopy(model).eval()
    logits = twin(x)
    loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()


def fit(model: nn.Module, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, seed: int,
        device: str = "cpu", snapshot: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None
        ) -> tuple[dict[int, dict[str, torch.Tensor]], float]:
    """Train ``model``'s trainable parameters in place with seeded shuffling and dropout.

    Returns ``snapshot(model)`` (default: the whole state dict, on the CPU) at every epoch
    in ``recipe.saved_epochs``, and the wall time of the training loop alone.
    """
    if snapshot is None:
        def snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], recipe)
    loss_fn = nn.CrossEntropyLoss()
    x, y = x.to(device), y.to(device)
    warm_up(model, loss_fn, x[: recipe.batch_size], y[: recipe.batch_size])
    shuffle = torch.Generator().manual_seed(derive_seed("shuffle", seed))
    torch.manual_seed(derive_seed("dropout", seed))
    states: dict[int, dict[str, torch.Tensor]] = {}
    saved = set(recipe.saved_epochs)
    n = x.shape[0]
    t0 = time.perf_counter()
    model.train()
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(n, generator=shuffle).to(device)
        for start in range(0, n, recipe.batch_size):
            idx = order[start:start + recipe.batch_size]
            opt.zero_grad(set_to_none=True)
            logits = model(x[idx])
            # Flattening makes one loss for both shapes: classification (B, C) vs (B,), and
            # language models (B, T, V) vs (B, T), i.e. the mean next-token cross-entropy.
            loss_fn(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1)).backward()
            opt.step()
        if epoch in saved:
            states[epoch] = snapshot(model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return states, time.perf_counter() - t0


def train_model(model_spec: ModelSpec, recipe: Recipe, x: torch.Tensor, y: torch.Tensor,
                seed: int, device: str = "cpu") -> TrainedModel:
    """Train from a seeded initialization with seeded shuffling and dropout.

    The same (spec, recipe, data, seed, device) always gives the same weights: all
    randomness comes from generators seeded here, none from global state.
    """
    check_tokens(model_spec, x, y)
    torch.manual_seed(derive_seed("init", seed))  # nn.Linear init draws from the global RNG
    model = build_model(model_spec).to(device)
    states, seconds = fit(model, recipe, x, y, seed, device)
    return TrainedModel(states, seconds, recipe.epochs)


def load_weights(model_spec: ModelSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    """A model in eval mode holding ``state``; raises a clear error when shapes disagree."""
    from raytda.core.checkpoint import CheckpointError

    model = build_model(model_spec)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or bad:
        detail = "; ".join(filter(None, [
            f"missing {missing}" if missing else "",
            f"unexpected {extra}" if extra else "",
            ", ".join(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in bad),
        ]))
        raise CheckpointError(f"checkpoint does not fit model {model_spec.to_dict()}: {detail}")
    model.load_state_dict(state)
    return model.eval()
