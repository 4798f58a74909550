"""Many models of one architecture and recipe trained together as one stacked model.

An LDS evaluation retrains m models and a naive ensemble trains I more: the same
architecture and recipe, differing only in seed, training subset and dropout stream. Each
is a small model stepping through small batches, so training them one at a time leaves
the machine mostly in per-step overhead. Here the M models' trainable parameters are
stacked along a leading model axis, and one ``torch.func.vmap`` over that axis runs the
forward of all M at once (``functional_call`` on one template module), so a step is one
forward, one backward and one optimizer call for all M.

Each stacked model follows exactly what :func:`raytda.core.train.fit` does for it alone:

- initialization: the caller builds each model's initial weights as the single path does
  (e.g. ``seeded_init(seed)`` then ``build()``) and hands them in;
- data order: its own ``torch.randperm`` stream from ``derive_seed("shuffle", seed)`` over
  its own rows, in batches of ``recipe.batch_size`` (so all M must have as many rows);
- dropout: the single path seeds the global RNG with ``derive_seed("dropout", seed)`` and
  ``nn.Dropout`` draws ``bernoulli(1 - p)`` noise of the site's input shape at each call,
  in call order, nothing else drawing in between. That stream is reproducible bit for bit:
  each model gets a ``torch.Generator`` seeded alike, and per batch its noise is drawn
  site by site in call order with the same op (``bernoulli_(1 - p)`` then ``div_(1 - p)``);
  inside vmap the dropout modules are switched to eval (identity, no draw) and a forward
  hook multiplies their input by that model's noise, which is ``nn.Dropout``'s own product.
  The single path is therefore unchanged and no stored key changes;
- optimizer: ``make_optimizer`` on cache-sized slices of the stacked leaves (``_Slices``).
  SGD and Adam are elementwise, so each model's slice steps exactly as its own optimizer
  would.

The result is bit-identical to the model trained alone, not just close: every
``nn.Linear`` runs, under vmap, as a batched GEMM that computes each model's own
``addmm`` and autograd's own gradients for it (:mod:`raytda.core.stacked_linear`), and
the loss runs model by model on its slice of the outputs, since vmap's own rules for
``linear`` and ``nll_loss`` round differently in the last bit and training amplifies that
(measured on MNIST-MLP: 5e-2 in weights after 20 epochs). Other layers (activations,
layer norms, attention) run under vmap's rules, which are bit-identical for the MLPs and
the toy GPT the tests train but not for every model, so every pack checks its first batch
against the same models computed alone before it trains
(``StackedTrainer._check_exact``). Each model's GEMMs still cost what they cost alone
(the same FLOPs in the same order), so what stacking saves is everything around them: one
Python step, one autograd graph, one optimizer call and one data gather for M models
instead of M. On one CPU thread that bounds the speed-up by (time alone) / (its GEMMs'
time).

Models with state that training mutates (BatchNorm running statistics) or randomness other
than ``nn.Dropout`` modules cannot be stacked: :func:`check_stackable` says so, and a random
op inside vmap raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raytda.core.costs import stopwatch
from raytda.core.network import Forward, call_module
from raytda.core.outputs import LossFn, mean_cross_entropy
from raytda.core.stacked_linear import StackedLinears
from raytda.core.train import make_optimizer, state_snapshot
from raytda.data.samples import Samples, TensorSamples, as_samples
from raytda.specs import Recipe, derive_seed

Snapshot = Callable[[nn.Module], dict[str, torch.Tensor]]


class NotStackable(ValueError):
    """A model, recipe or data that stacked training cannot reproduce exactly."""


@dataclass(frozen=True)
class Member:
    """One model of a pack: its rows of the training samples and its seed (the single
    path's ``seed`` argument of ``fit``: shuffling and dropout streams derive from it)."""

    rows: np.ndarray
    seed: int


@dataclass
class StackedResult:
    """Per model, its ``snapshot`` at every saved epoch; and the loop's cost (CPU or
    device seconds, as :func:`raytda.core.train.fit` measures one model's) and wall time
    for all of them."""

    states: list[dict[int, dict[str, torch.Tensor]]]
    train_time_s: float
    train_wall_s: float = float("nan")

    @property
    def share_s(self) -> float:
        """Each model's share of the packed loop's cost."""
        return self.train_time_s / max(1, len(self.states))


def check_stackable(module: nn.Module) -> None:
    """Raise NotStackable for modules whose training the stacked path cannot reproduce."""
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            raise NotStackable(f"{name or type(m).__name__} is a BatchNorm with running "
                               f"statistics, which training updates in place")
        if isinstance(m, nn.modules.dropout._DropoutNd) and type(m) is not nn.Dropout:
            raise NotStackable(f"{name} is a {type(m).__name__}; only nn.Dropout's element "
                               f"noise is reproduced")
        if type(m) is nn.Dropout and m.p >= 1:
            raise NotStackable(f"{name} drops everything (p={m.p})")


def stacking_obstacle(module: nn.Module, example: object) -> str | None:
    """Why models like ``module``, fed inputs like ``example`` (a training batch), cannot
    train stacked, or None. The executors pack training jobs by default; these train
    alone instead. A random op inside the forward is only found when it runs (the
    trainer raises :class:`NotStackable`)."""
    if not isinstance(example, torch.Tensor):
        return f"its inputs are a {type(example).__name__}, not one tensor"
    try:
        check_stackable(module)
    except NotStackable as e:
        return str(e)
    return None


class _Call(nn.Module):
    """``forward(module, x)`` as a module, so ``functional_call`` can run a Task's forward."""

    def __init__(self, module: nn.Module, forward: Forward) -> None:
        super().__init__()
        self.module = module
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.module, x)


@dataclass(frozen=True)
class _Site:
    """One call of an ``nn.Dropout`` module: its per-sample input shape and rate."""

    shape: tuple[int, ...]
    rate: float


class _Noise:
    """Drives every ``nn.Dropout`` call of a module with given noise, in call order.

    Outside a step it is inert (``noise`` None): the hook returns nothing and the module
    (in eval) is the identity."""

    def __init__(self, module: nn.Module) -> None:
        self.mods = [m for m in module.modules() if type(m) is nn.Dropout and m.p > 0]
        self.noise: Sequence[torch.Tensor] | None = None
        self.calls = 0
        self.handles = [m.register_forward_hook(self._hook) for m in self.mods]

    def _hook(self, _mod: nn.Module, args: tuple, _out: torch.Tensor) -> torch.Tensor | None:
        if self.noise is None:
            return None
        i, self.calls = self.calls, self.calls + 1
        return args[0] * self.noise[i]  # nn.Dropout's own product: input * (mask / (1 - p))

    def sites(self, call: _Call, example: torch.Tensor) -> tuple[_Site, ...]:
        """The dropout calls of one forward of ``example`` (a batch of one), in order."""
        found: list[_Site] = []
        rate = {m: float(m.p) for m in self.mods}

        def probe(mod: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            found.append(_Site(tuple(args[0].shape[1:]), rate[mod]))

        handles = [m.register_forward_hook(probe) for m in self.mods]
        try:
            with torch.no_grad():
                call(example)
        finally:
            for h in handles:
                h.remove()
        return tuple(found)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _take(samples: Samples, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples.take(rows)``: for tensors, one ``index_select`` per tensor, the same rows
    as ``TensorSamples.take``'s ``x[rows]`` and measured 4x faster for a pack's batch
    (3,200 MNIST rows of 784 floats, 1 thread)."""
    if isinstance(samples, TensorSamples):
        return samples.x.index_select(0, rows), samples.y.index_select(0, rows)
    return samples.take(rows)


def _stacked_inputs(x: torch.Tensor, m: int) -> torch.Tensor:
    """(M * B, ...) rows, model-major, as (M, B, ...)."""
    return x.reshape(m, x.shape[0] // m, *x.shape[1:])


class _Slices:
    """The stacked (M, ...) leaves as the optimizer steps them: views of a few models each.

    torch's SGD and Adam on the CPU update one parameter tensor completely (momentum,
    then the weight) before the next. On a whole stacked leaf that streams it through
    memory once per op (MNIST-MLP's first layer: 50 x 128 x 784 floats, 20 MB for the
    weights, as much for the gradient and the momentum); sliced to about ``target_bytes``
    per view, each slice's update runs in cache, as a model alone's does. The updates
    are elementwise, so each model's numbers are the same whichever way it is sliced."""

    def __init__(self, params: dict[str, torch.Tensor], target_bytes: int = 2**18) -> None:
        self.parts: list[tuple[torch.Tensor, slice]] = []
        self.views: list[torch.Tensor] = []  # what the optimizer holds: no autograd history
        for leaf in params.values():
            per_model = leaf[0].numel() * leaf.element_size()
            k = max(1, target_bytes // max(1, per_model))
            for start in range(0, leaf.shape[0], k):
                part = slice(start, start + k)
                self.parts.append((leaf, part))
                self.views.append(leaf.detach()[part])  # shares the leaf's storage

    def hand_over_grads(self) -> None:
        """Each view's gradient: its slice of the leaf's (a view, not a copy)."""
        for (leaf, part), view in zip(self.parts, self.views):
            view.grad = None if leaf.grad is None else leaf.grad[part]

    def zero_grad(self) -> None:
        for (leaf, _), view in zip(self.parts, self.views):
            leaf.grad = view.grad = None


class StackedTrainer:
    """Trains M models of one architecture and recipe as one stacked model.

    ``template`` is any instance of the architecture (it is modified: it ends up holding
    the last model's weights); ``inits[i]`` are model i's initial trainable parameters by
    name (the template's trainable parameters; everything else, frozen parameters and
    buffers, is shared by all M, as a LoRA pack's base model is). ``loss_fn(forward(module,
    x), y)`` is a batch's mean loss, as for ``fit``.
    """

    def __init__(self, template: nn.Module, inits: Sequence[dict[str, torch.Tensor]],
                 recipe: Recipe, device: str = "cpu", loss_fn: LossFn = mean_cross_entropy,
                 forward: Forward = call_module) -> None:
        check_stackable(template)
        if not inits:
            raise ValueError("a pack needs at least one model")
        self.template = template.to(device)
        self.recipe, self.device, self.loss_fn = recipe, device, loss_fn
        self.call = _Call(self.template, forward)
        self.names = [n for n, p in self.template.named_parameters() if p.requires_grad]
        for i, init in enumerate(inits):
            if set(init) != set(self.names):
                raise ValueError(f"model {i}'s initial parameters {sorted(init)[:3]}... are not "
                                 f"the template's trainable parameters {self.names[:3]}...")
        # (M, *shape) leaves: each model's slice is its own parameter.
        self.params = {n: torch.stack([init[n].detach().to(device) for init in inits])
                       .requires_grad_(True) for n in self.names}
        trainable = set(self.names)
        self.shared = {n: t.detach() for n, t in self.template.named_parameters()
                       if n not in trainable}
        self.shared.update(dict(self.template.named_buffers()))
        self.m = len(inits)

    def _losses(self, x: torch.Tensor, y: torch.Tensor, noise: list[torch.Tensor],
                hooks: _Noise) -> torch.Tensor:
        """(M,) mean batch losses; x (M, B, ...), y (M, B, ...), noise[s] (M, B, *site).

        The forward runs under vmap; the loss runs model by model on its slice of the
        outputs, since vmap's rule for e.g. ``nll_loss`` sums in another order than the
        loss alone does (measured: last-bit differences that training amplifies). M small
        loss calls cost little next to the forward."""
        def one(params: dict[str, torch.Tensor], xb: torch.Tensor, nb: list[torch.Tensor]
                ) -> torch.Tensor:
            hooks.noise, hooks.calls = nb, 0
            return torch.func.functional_call(self.call, self._state(params), (xb,))

        try:
            out = torch.func.vmap(one)(self.params, x, noise)
        except RuntimeError as e:
            if "randomness" not in str(e):
                raise
            # vmap refuses random ops (other than the dropout noise drawn above) in its
            # default mode: their stream could not match the model trained alone
            raise NotStackable("the model draws random numbers in its forward other than "
                               "nn.Dropout's noise") from e
        finally:
            hooks.noise = None
        return torch.stack([self.loss_fn(o, t) for o, t in zip(out.unbind(0), y.unbind(0))])

    def _state(self, own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``functional_call``'s state for ``self.call``: the shared tensors and ``own``
        trainable ones (by the template's names)."""
        return {f"module.{n}": t for part in (self.shared, own) for n, t in part.items()}

    def _snapshot(self, i: int, snapshot: Snapshot) -> dict[str, torch.Tensor]:
        """Model i's snapshot: its slice loaded into the template."""
        own = dict(self.template.named_parameters())
        with torch.no_grad():
            for n in self.names:
                own[n].copy_(self.params[n][i])
        return snapshot(self.template)

    def fit(self, samples: Samples | tuple, members: Sequence[Member],
            snapshot: Snapshot | None = None) -> StackedResult:
        """Train every member on its rows of ``samples`` (tensors, or a Dataset read batch
        by batch) with its seed's streams; its ``snapshot`` (default: the whole state
        dict, on the CPU) at every epoch in ``recipe.saved_epochs``."""
        if len(members) != self.m:
            raise ValueError(f"{len(members)} members for {self.m} initial models")
        sizes = {len(mb.rows) for mb in members}
        if len(sizes) != 1:
            raise NotStackable(f"members train on {sorted(sizes)} rows; a pack's batches "
                               f"line up only when all have as many")
        samples = as_samples(samples)
        if isinstance(samples, TensorSamples):
            samples = samples.to(self.device)
        snapshot = snapshot or state_snapshot
        recipe, dev, m = self.recipe, self.device, self.m
        n = sizes.pop()
        rows = torch.stack([torch.as_tensor(np.asarray(mb.rows), dtype=torch.long)
                            for mb in members])  # (M, n)
        shuffles = [torch.Generator().manual_seed(derive_seed("shuffle", mb.seed))
                    for mb in members]
        drops = [torch.Generator().manual_seed(derive_seed("dropout", mb.seed))
                 for mb in members]
        slices = _Slices(self.params)
        opt = make_optimizer(slices.views, recipe)
        hooks = _Noise(self.template)
        linears = None
        try:
            self.template.train()
            for mod in hooks.mods:
                mod.eval()  # identity inside vmap; the hook applies the member's noise
            x1, _ = samples.take(rows[0, :1])
            sites = hooks.sites(self.call, x1.to(dev))
            # each batch size the loop will run: recipe.batch_size, and the last batch's
            sizes = sorted({min(recipe.batch_size, n), n % recipe.batch_size} - {0})
            alone = [self._alone_grads(samples, rows, b) for b in sizes]
            linears = StackedLinears(self.template)
            for b, reference in zip(sizes, alone):
                self._check_exact(samples, rows, sites, hooks, b, reference)
            states: list[dict[int, dict[str, torch.Tensor]]] = [{} for _ in members]
            saved = set(recipe.saved_epochs)
            spent, t0 = stopwatch(dev), time.perf_counter()
            for epoch in range(1, recipe.epochs + 1):
                # (M, n): member i's row order this epoch, from its own stream.
                order = torch.stack([rows[i, torch.randperm(n, generator=g)]
                                     for i, g in enumerate(shuffles)])
                for start in range(0, n, recipe.batch_size):
                    idx = order[:, start:start + recipe.batch_size]
                    xb, yb = _take(samples, idx.reshape(-1))
                    noise = self._noise(sites, drops, idx.shape[1])
                    slices.zero_grad()
                    losses = self._losses(_stacked_inputs(xb.to(dev), m),
                                          _stacked_inputs(yb.to(dev), m), noise, hooks)
                    # d(sum)/d(loss_i) = 1: each slice gets exactly its own model's gradient.
                    losses.sum().backward()
                    slices.hand_over_grads()
                    opt.step()
                if epoch in saved:
                    for i in range(m):
                        states[i][epoch] = self._snapshot(i, snapshot)
            seconds, wall_s = spent(), time.perf_counter() - t0  # the device clock syncs
        finally:
            hooks.remove()
            if linears is not None:
                linears.remove()
        return StackedResult(states, seconds, wall_s)

    def _noise(self, sites: Sequence[_Site], drops: Sequence[torch.Generator], b: int
               ) -> list[torch.Tensor]:
        """Per site (M, B, *shape) noise; member i's draws come from its own generator in
        the single path's order (its sites in call order), each the op ``nn.Dropout`` uses."""
        bufs = [torch.empty((self.m, b, *s.shape)) for s in sites]
        for i, g in enumerate(drops):
            for s, buf in zip(sites, bufs):
                buf[i].bernoulli_(1 - s.rate, generator=g)
        return [buf.div_(1 - s.rate).to(self.device) for s, buf in zip(sites, bufs)]

    def _probe_models(self) -> list[int]:
        """The models whose arithmetic ``_check_exact`` compares: the first and the last."""
        return sorted({0, self.m - 1})

    def _alone_grads(self, samples: Samples, rows: torch.Tensor, b: int
                     ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Loss and gradients of each probed model on its first ``b`` rows, computed as
        the model alone computes them: no vmap, ``nn.Linear`` as itself, dropout off (the
        stacked side multiplies by noise of ones, which is exact)."""
        out = []
        for i in self._probe_models():
            xb, yb = samples.take(rows[i, :b])
            own = {n: self.params[n][i].detach().clone().requires_grad_(True)
                   for n in self.names}
            loss = self.loss_fn(torch.func.functional_call(
                self.call, self._state(own), (xb.to(self.device),)), yb.to(self.device))
            grads = torch.autograd.grad(loss, list(own.values()), allow_unused=True)
            out.append((loss.detach(), list(grads)))
        return out

    def _check_exact(self, samples: Samples, rows: torch.Tensor, sites: Sequence[_Site],
                     hooks: _Noise, b: int,
                     alone: list[tuple[torch.Tensor, list[torch.Tensor]]]) -> None:
        """One untimed stacked forward/backward on every model's first ``b`` rows (no
        step, no draw from any member's stream), which also keeps one-off start-up out of
        the loop's cost, as ``fit``'s warm-up does. Its losses and gradients must equal,
        bit for bit, those of the probed models computed alone (``alone``): a model whose
        layers round differently under vmap (some layer norms do, at some widths) raises
        NotStackable before anything trains, so its models train one by one and packing
        never changes a number."""
        xb, yb = samples.take(rows[:, :b].reshape(-1))
        ones = [torch.ones((self.m, b, *s.shape), device=self.device) for s in sites]
        losses = self._losses(_stacked_inputs(xb.to(self.device), self.m),
                              _stacked_inputs(yb.to(self.device), self.m), ones, hooks)
        losses.sum().backward()
        try:
            for i, (loss, grads) in zip(self._probe_models(), alone):
                pairs = [(losses[i].detach(), loss)]
                for name, g in zip(self.names, grads):
                    mine = self.params[name].grad
                    if (g is None) != (mine is None):
                        raise NotStackable(f"{name} gets a gradient only "
                                           f"{'alone' if mine is None else 'stacked'}")
                    if g is not None:
                        pairs.append((mine[i], g))
                if not all(torch.equal(a, c) for a, c in pairs):
                    worst = max(float((a - c).abs().max()) for a, c in pairs)
                    raise NotStackable(
                        f"its stacked arithmetic is not bit-identical to training alone "
                        f"(model {i}, a batch of {b}: loss or gradients differ by up to "
                        f"{worst:.1e})")
        finally:
            for p in self.params.values():
                p.grad = None


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s trainable parameters by name, detached copies (a member's init)."""
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def bytes_per_model(module: nn.Module, recipe: Recipe, example: torch.Tensor,
                    loss_fn: LossFn = mean_cross_entropy, forward: Forward = call_module,
                    y_example: torch.Tensor | None = None) -> int:
    """Bytes one more model adds to a pack: its trainable parameters with their gradient
    and optimizer state (SGD momentum: 1 copy, Adam: 2), its saved snapshots, and the
    activations autograd keeps for one batch (counted from one forward of a batch of
    ``recipe.batch_size`` rows built from ``example``, a batch of one)."""
    params = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    state = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    opt_copies = 2 if recipe.optimizer == "adam" else (1 if recipe.momentum else 0)
    kept: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.append(t.numel() * t.element_size())
        return t

    x = example.expand(recipe.batch_size, *example.shape[1:]).contiguous()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward(module, x)
        if y_example is not None:
            loss_fn(out, y_example.expand(recipe.batch_size, *y_example.shape[1:]))
    return params * (2 + opt_copies) + state * len(recipe.saved_epochs) + sum(kept)


def models_per_pack(per_model: int, budget_bytes: int, limit: int | None = None) -> int:
    """How many models of ``per_model`` bytes a pack of ``budget_bytes`` holds (at least
    one: a model that does not fit alone trains alone), at most ``limit``."""
    k = max(1, int(budget_bytes // max(1, per_model)))
    return min(k, limit) if limit else k


def train_stacked(build: Callable[[], nn.Module], recipe: Recipe, samples: Samples | tuple,
                  members: Sequence[Member], device: str = "cpu",
                  loss_fn: LossFn = mean_cross_entropy, forward: Forward = call_module,
                  snapshot: Snapshot | None = None) -> StackedResult:
    """Train ``build()`` once per member, all stacked: member i as ``train_model`` /
    ``fit`` would train it alone on ``samples.subset(rows_i)`` with seed ``seed_i``
    (initial weights from ``seeded_init(seed_i)``, then its shuffle and dropout streams)."""
    from raytda.core.train import seeded_init

    inits = []
    for mb in members:
        seeded_init(mb.seed)
        inits.append(trainable_state(build()))
    trainer = StackedTrainer(build(), inits, recipe, device, loss_fn, forward)
    return trainer.fit(samples, members, snapshot)
