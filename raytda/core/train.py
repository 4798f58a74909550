"""Deterministic training from scratch on a subset, keeping intermediate checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from raytda.core.costs import stopwatch
from raytda.core.network import Forward, Network, call_module
from raytda.core.outputs import LossFn, mean_cross_entropy
from raytda.data.samples import Samples, TensorSamples, as_samples
from raytda.specs import Recipe, derive_seed


@dataclass
class TrainedModel:
    """Weights at every saved epoch (``recipe.saved_epochs``) and the training loop's cost
    (CPU or device seconds, :mod:`raytda.core.costs`)."""

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


def check_tokens(x: torch.Tensor, y: torch.Tensor, vocab: int, block_size: int) -> None:
    """A language model's token data must fit its vocabulary and context; say so clearly
    (one line) if not."""
    if x.numel() == 0:
        return
    from raytda.data import DataError

    top = int(max(x.max(), y.max()))
    if top >= vocab:
        raise DataError(f"the data has token id {top} but the model's vocab is {vocab}; "
                        f"set vocab to at least {top + 1}")
    if x.shape[-1] > block_size:
        raise DataError(f"sequences of {x.shape[-1]} tokens exceed the model's block_size "
                        f"{block_size}")


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, betas=recipe.betas,
                            weight_decay=recipe.weight_decay)


def warm_up(model: nn.Module, loss_fn: LossFn, forward: Forward, x: torch.Tensor,
            y: torch.Tensor) -> None:
    """One untimed forward/backward on a copy, so one-off library start-up (thread pools,
    kernel selection) is not billed to the first model a process trains."""
    import copy

    twin = copy.deepcopy(model).eval()
    loss_fn(forward(twin, x), y).backward()


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict, detached, on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class Loop(NamedTuple):
    """One ``fit`` loop's cost (CPU or device seconds) and its wall time."""

    cost_s: float
    wall_s: float


_LOOP_SECONDS: ContextVar[list[Loop] | None] = ContextVar("raytda_fit_loops", default=None)


@contextmanager
def loop_clock() -> Iterator[list[Loop]]:
    """Collects the cost and wall time of every ``fit`` loop inside the block (its one-off
    start-up, the optimizer's first import of torch internals included, is not training)."""
    token = _LOOP_SECONDS.set([])
    try:
        yield _LOOP_SECONDS.get()
    finally:
        _LOOP_SECONDS.reset(token)


def fit(model: nn.Module, recipe: Recipe, samples: Samples | tuple, seed: int,
        device: str = "cpu", snapshot: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None,
        loss_fn: LossFn = mean_cross_entropy, forward: Forward = call_module
        ) -> tuple[dict[int, dict[str, torch.Tensor]], float]:
    """Train ``model``'s trainable parameters in place with seeded shuffling and dropout.

    ``samples`` are tensors or a Dataset (:func:`raytda.data.samples.as_samples`); tensors move to
    ``device`` once, Dataset rows are read batch by batch. ``loss_fn(forward(model, x), y)``
    is a batch's mean loss. Returns ``snapshot(model)`` (default: the whole state dict, on
    the CPU) at every epoch in ``recipe.saved_epochs``, and the cost of the loop alone (CPU
    or device seconds, :func:`raytda.core.costs.stopwatch`; its wall time goes to
    :func:`loop_clock`).
    """
    samples = as_samples(samples)
    if isinstance(samples, TensorSamples):
        samples = samples.to(device)
    snapshot = snapshot or state_snapshot
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], recipe)
    warm = torch.arange(min(recipe.batch_size, samples.n))
    xw, yw = samples.take(warm)
    warm_up(model, loss_fn, forward, xw.to(device), yw.to(device))
    shuffle = torch.Generator().manual_seed(derive_seed("shuffle", seed))
    torch.manual_seed(derive_seed("dropout", seed))
    states: dict[int, dict[str, torch.Tensor]] = {}
    saved = set(recipe.saved_epochs)
    n = samples.n
    t0 = time.perf_counter()
    spent = stopwatch(device)  # inside the wall time's interval
    model.train()
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(n, generator=shuffle)
        if isinstance(samples, TensorSamples):
            order = order.to(device)
        for start in range(0, n, recipe.batch_size):
            xb, yb = samples.take(order[start:start + recipe.batch_size])
            opt.zero_grad(set_to_none=True)
            loss_fn(forward(model, xb.to(device)), yb.to(device)).backward()
            opt.step()
        if epoch in saved:
            states[epoch] = snapshot(model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = spent()
    wall = time.perf_counter() - t0
    clock = _LOOP_SECONDS.get()
    if clock is not None:
        clock.append(Loop(seconds, wall))
    return states, seconds


def check_state(model: nn.Module, state: dict[str, torch.Tensor], what: str = "model") -> None:
    """Raise a CheckpointError naming every missing, unexpected or misshapen tensor."""
    from raytda.core.checkpoint import CheckpointError

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or bad:
        detail = "; ".join(filter(None, [
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "",
            f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}" if extra else "",
            ", ".join(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in bad[:5]),
        ]))
        raise CheckpointError(f"checkpoint does not fit {what}: {detail}")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str = "model") -> nn.Module:
    """``model`` holding ``state`` (checked first), in eval mode."""
    check_state(model, state, what)
    model.load_state_dict(state)
    return model.eval()


def seeded_init(seed: int) -> None:
    """Seed the global RNG that ``nn.Module`` constructors draw their initial weights from."""
    torch.manual_seed(derive_seed("init", seed))


def train_model(build: Callable[[], nn.Module], recipe: Recipe, x: torch.Tensor,
                y: torch.Tensor, seed: int, device: str = "cpu") -> TrainedModel:
    """Train the model ``build()`` returns (e.g. a Task's ``build_model``) from a seeded
    initialization (see ``fit``).

    The same (model, recipe, data, seed, device) always gives the same weights: all
    randomness comes from generators seeded here, none from global state.
    """
    seeded_init(seed)
    model = build().to(device)
    states, seconds = fit(model, recipe, (x, y), seed, device)
    return TrainedModel(states, seconds, recipe.epochs)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], example: torch.Tensor,
                 mask_dims: int | None = None) -> Network:
    """``module`` holding ``state`` as a :class:`Network` in eval mode, its dropout sites
    probed with the input batch ``example`` (``mask_dims`` as ``Task.dropout_mask_dims``);
    a clear CheckpointError when the state does not fit."""
    module = load_state(module, state, f"model {type(module).__name__}")
    return Network(module, example, mask_dims=mask_dims).eval()
