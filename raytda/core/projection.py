"""Seeded Gaussian random projection, generated blockwise within a memory budget.

The matrix P (p x k, entries N(0, 1/k)) is defined chunk by chunk: rows
[c*CHUNK, (c+1)*CHUNK) come from a generator seeded by (seed, c). The memory budget only
decides how many chunks are held at once, never the values, so the projection of a
gradient is the same under any budget. When P fits the budget it is generated once and
kept; otherwise chunks are regenerated per call, so callers should pass large batches.
"""

from __future__ import annotations

import math

import torch

from raytda.specs import derive_seed

CHUNK_ROWS = 4096


class GaussianProjector:
    """Projects (batch, p) gradients to (batch, k)."""

    def __init__(self, n_params: int, k: int, seed: int, memory_bytes: int = 1 << 30,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if k < 1:
            raise ValueError(f"projection dimension must be >= 1, got {k}")
        self.n_params, self.k, self.seed = n_params, k, seed
        self.device, self.dtype = torch.device(device), dtype
        itemsize = torch.empty(0, dtype=dtype).element_size()
        self.chunk_bytes = CHUNK_ROWS * k * itemsize
        if memory_bytes < self.chunk_bytes:
            raise ValueError(f"projection memory budget {memory_bytes} B is below one chunk "
                             f"({self.chunk_bytes} B = {CHUNK_ROWS} rows x k={k}); raise it")
        self.n_chunks = math.ceil(n_params / CHUNK_ROWS)
        self.chunks_per_block = max(1, memory_bytes // self.chunk_bytes)
        self.resident = self.chunks_per_block >= self.n_chunks
        self._full: torch.Tensor | None = None

    def chunk(self, c: int) -> torch.Tensor:
        """Rows of chunk c, regenerated from (seed, c); identical on every call."""
        rows = min(CHUNK_ROWS, self.n_params - c * CHUNK_ROWS)
        gen = torch.Generator(device="cpu").manual_seed(derive_seed("proj", self.seed, c))
        block = torch.randn(rows, self.k, generator=gen, dtype=torch.float32)
        block.mul_(1.0 / math.sqrt(self.k))
        return block.to(device=self.device, dtype=self.dtype)

    def blocks(self):
        """Yield (row_slice, P_rows) groups of at most the budget."""
        for c0 in range(0, self.n_chunks, self.chunks_per_block):
            c1 = min(self.n_chunks, c0 + self.chunks_per_block)
            rows = slice(c0 * CHUNK_ROWS, min(self.n_params, c1 * CHUNK_ROWS))
            yield rows, torch.cat([self.chunk(c) for c in range(c0, c1)])

    def matrix(self) -> torch.Tensor:
        """The whole P (only for small p; tests use it as the brute-force reference)."""
        return torch.cat([b for _, b in self.blocks()])

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """grads (batch, p) -> (batch, k) in the projector's dtype."""
        if grads.shape[1] != self.n_params:
            raise ValueError(f"gradient width {grads.shape[1]} != projector's {self.n_params}")
        g = grads.to(device=self.device, dtype=self.dtype)
        if self.resident:
            if self._full is None:
                self._full = self.matrix()
            return g @ self._full
        out = torch.zeros(g.shape[0], self.k, device=self.device, dtype=self.dtype)
        for rows, block in self.blocks():
            out.addmm_(g[:, rows], block)
        return out
