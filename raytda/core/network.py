"""Any ``nn.Module`` as attribution sees it: logits from a batch, dropout driven by masks.

A Dropout Ensemble member is a fixed sub-network of a trained model. Its dropout sites
are the model's own ``nn.Dropout`` modules, found by one probe forward pass: each call of
such a module is a site (a module applied twice is two sites), in call order. When masks
are given, a forward hook replaces each site's output by ``input * mask / (1 - p)``,
which is what ``nn.Dropout`` computes in training for that draw of its mask. The model
itself needs no change and no ``masks`` argument.

A mask covers the trailing ``mask_dims`` dimensions of the site's input (all of them per
sample by default) and is broadcast over the rest: a language model that passes
``mask_dims=1`` drops the same hidden units at every position of a sequence, a CNN with
the default drops the same activations of every image. Masks have the site's shape (a
fixed sub-network) or ``(batch, *shape)`` (one draw per sample).

Sites with ``p == 0`` are skipped (they drop nothing), and so are peft's ``lora_dropout``
modules (the adapter's own regularizer, not part of the network being attributed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from raytda.core.batch import Batch

Forward = Callable[[nn.Module, torch.Tensor | Batch], torch.Tensor]


def call_module(module: nn.Module, x: torch.Tensor | Batch) -> torch.Tensor:
    """The default forward: ``module(x)`` returns the logits.

    A :class:`~raytda.core.batch.Batch` (dict inputs, as a tokenizer gives them) is passed
    as keyword arguments, ``module(**x)``; an output object that is not a tensor (a
    Hugging Face ``ModelOutput``) gives its ``.logits``."""
    if not isinstance(x, Batch):
        return module(x)
    out = module(**x)
    return out if isinstance(out, torch.Tensor) else out.logits


@dataclass(frozen=True)
class DropoutSite:
    """One call of an ``nn.Dropout`` module: where it is, its mask shape and its rate."""

    name: str
    call: int
    shape: tuple[int, ...]
    rate: float


def _dropout_modules(module: nn.Module) -> dict[nn.Module, str]:
    return {m: name for name, m in module.named_modules()
            if isinstance(m, nn.Dropout) and m.p > 0 and "lora_dropout" not in name}


def discover_sites(module: nn.Module, example: torch.Tensor | Batch, forward: Forward = call_module,
                   mask_dims: int | None = None) -> tuple[DropoutSite, ...]:
    """The dropout sites of ``module`` in call order, from one forward of ``example``
    (a batch of one sample) in eval mode."""
    mods = _dropout_modules(module)
    found: list[DropoutSite] = []
    calls: dict[nn.Module, int] = {}

    def hook(mod: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        shape = tuple(args[0].shape[1:])  # per sample: drop the batch dimension
        if mask_dims is not None:
            shape = shape[len(shape) - mask_dims:]
        found.append(DropoutSite(mods[mod], calls.get(mod, 0), shape, float(mod.p)))
        calls[mod] = calls.get(mod, 0) + 1

    was_training = module.training
    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        module.eval()
        with torch.no_grad():
            forward(module, example)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return tuple(found)


class Network(nn.Module):
    """``module`` with its dropout sites driven by explicit masks (see module docstring).

    ``net(x)`` is ``forward(module, x)``; ``net(x, masks=...)`` applies one mask per site
    (``mask_sizes`` / ``mask_rates`` say which). Parameters are the module's own, in its
    order, under the prefix ``module.``.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor | Batch,
                 forward: Forward = call_module, mask_dims: int | None = None) -> None:
        super().__init__()
        self.module = module
        self._forward = forward
        self.sites = discover_sites(module, example, forward, mask_dims)

    @property
    def calls_module(self) -> bool:
        """Whether the logits are ``module(x)`` itself (the default forward), with no
        user function between the module's output and the logits."""
        return self._forward is call_module

    @property
    def mask_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Mask shape of each dropout site, in call order."""
        return tuple(s.shape for s in self.sites)

    @property
    def mask_rates(self) -> tuple[float, ...]:
        """Dropout rate of each site, in call order."""
        return tuple(s.rate for s in self.sites)

    @contextmanager
    def _masked(self, masks: tuple[torch.Tensor, ...]) -> Iterator[None]:
        if len(masks) != len(self.sites):
            raise ValueError(f"got {len(masks)} masks for {len(self.sites)} dropout sites")
        mods = _dropout_modules(self.module)
        by_call = {(s.name, s.call): (i, s) for i, s in enumerate(self.sites)}
        calls: dict[nn.Module, int] = {}

        def hook(mod: nn.Module, args: tuple, _out: torch.Tensor) -> torch.Tensor:
            n = calls.get(mod, 0)
            calls[mod] = n + 1
            i, site = by_call[(mods[mod], n)]
            inp, m = args[0], masks[i]
            # (shape) or (batch, shape): broadcast over the dims in between.
            batched = m.dim() == len(site.shape) + 1
            lead = (m.shape[0],) if batched else ()
            ones = (1,) * (inp.dim() - len(lead) - len(site.shape))
            return inp * m.reshape(*lead, *ones, *site.shape) / (1.0 - site.rate)

        handles = [m.register_forward_hook(hook) for m in mods]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, x: torch.Tensor | Batch, masks: tuple[torch.Tensor, ...] | None = None
                ) -> torch.Tensor:
        if masks is None:
            return self._forward(self.module, x)
        with self._masked(masks):
            return self._forward(self.module, x)


def inner(model: nn.Module) -> nn.Module:
    """The user's module under a :class:`Network` (the model itself otherwise)."""
    return model.module if isinstance(model, Network) else model
