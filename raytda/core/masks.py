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


@dataclass(frozen=True)
class MaskSpec:
    """Everything that determines a member's masks."""

    seed: int
    rate: float
    mode: str = "fixed"  # or "per-sample"


def _draw(rng: np.random.Generator, sizes: tuple[int, ...], rate: float) -> list[np.ndarray]:
    return [(rng.random(w) >= rate).astype(np.float32) for w in sizes]


def fixed_masks(spec: MaskSpec, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """One (width,) mask per site."""
    rng = np.random.default_rng(derive_seed("mask", spec.seed))
    return tuple(torch.from_numpy(m) for m in _draw(rng, sizes, spec.rate))


def sample_masks(spec: MaskSpec, sizes: tuple[int, ...], split: str,
                 index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(batch, width) masks for samples ``index`` of ``split`` ('train' or 'test')."""
    rows: list[list[np.ndarray]] = []
    for j in index.tolist():
        rng = np.random.default_rng(derive_seed("mask", spec.seed, split, int(j)))
        rows.append(_draw(rng, sizes, spec.rate))
    return tuple(torch.from_numpy(np.stack([r[s] for r in rows])) for s in range(len(sizes)))


def masks_for(spec: MaskSpec | None, sizes: tuple[int, ...], split: str,
              index: torch.Tensor, device: torch.device | str = "cpu"
              ) -> tuple[tuple[torch.Tensor, ...] | None, bool]:
    """Masks for a batch, and whether they carry a batch dimension."""
    if spec is None:
        return None, False
    if spec.mode == "fixed":
        return tuple(m.to(device) for m in fixed_masks(spec, sizes)), False
    return tuple(m.to(device) for m in sample_masks(spec, sizes, split, index)), True
