"""Dropout masks for ensemble members, reproducible from seeds.

A 'fixed' mask is one 0/1 vector per dropout site, shared by every sample the member
touches (a fixed sub-network). A 'per-sample' mask is drawn per (member, split, sample
index), so a sample gets the same mask whatever batch it is processed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raytda.specs import derive_seed

Sizes = tuple[int | tuple[int, ...], ...]


@dataclass(frozen=True)
class MaskSpec:
    """Everything that determines a member's masks.

    ``rate`` is one dropout rate for every site, or one per site (``Network.mask_rates``).
    """

    seed: int
    rate: float | tuple[float, ...]
    mode: str = "fixed"  # or "per-sample"


def _draw(rng: np.random.Generator, sizes: Sizes, rate: float | tuple[float, ...]
          ) -> list[np.ndarray]:
    rates = rate if isinstance(rate, tuple) else (rate,) * len(sizes)
    if len(rates) != len(sizes):
        raise ValueError(f"{len(rates)} dropout rates for {len(sizes)} sites")
    # A site's shape is a width (int) or a tuple; rng.random draws the same stream for both.
    return [(rng.random(w) >= p).astype(np.float32) for w, p in zip(sizes, rates)]


def fixed_masks(spec: MaskSpec, sizes: Sizes) -> tuple[torch.Tensor, ...]:
    """One mask of the site's shape per site."""
    rng = np.random.default_rng(derive_seed("mask", spec.seed))
    return tuple(torch.from_numpy(m) for m in _draw(rng, sizes, spec.rate))


def sample_masks(spec: MaskSpec, sizes: Sizes, split: str,
                 index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(batch, *shape) masks for samples ``index`` of ``split`` ('train', 'test', ...)."""
    rows: list[list[np.ndarray]] = []
    for j in index.tolist():
        rng = np.random.default_rng(derive_seed("mask", spec.seed, split, int(j)))
        rows.append(_draw(rng, sizes, spec.rate))
    return tuple(torch.from_numpy(np.stack([r[s] for r in rows])) for s in range(len(sizes)))


def masks_for(spec: MaskSpec | None, sizes: Sizes, split: str,
              index: torch.Tensor, device: torch.device | str = "cpu"
              ) -> tuple[tuple[torch.Tensor, ...] | None, bool]:
    """Masks for a batch, and whether they carry a batch dimension."""
    if spec is None:
        return None, False
    if spec.mode == "fixed":
        return tuple(m.to(device) for m in fixed_masks(spec, sizes)), False
    return tuple(m.to(device) for m in sample_masks(spec, sizes, split, index)), True
