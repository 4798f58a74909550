"""Seeded Gaussian random projection, generated blockwise within a memory budget.

The matrix P (p x k, entries N(0, 1/k)) is defined chunk by chunk: rows
[c*CHUNK_ROWS, (c+1)*CHUNK_ROWS) come from a CPU generator seeded by (seed, c), drawn as
float32 ``randn(rows, k) * (1/sqrt(k))``. The memory budget only decides how many chunks
are held at once, never the values, so the projection of a gradient is the same under any
budget. When P fits the budget it is generated once and kept; otherwise chunks are
regenerated per call, so callers should pass large batches.

Speed notes (CPU): the dense product ``G @ P`` is the cost that matters; everything else
here exists to keep the rest out of its way. Chunks are drawn straight into their place in
a preallocated destination (no ``torch.cat`` copy, no second pass to scale when the fused
draw is exact), and because each chunk has its own generator, chunks are drawn on several
threads at once with values that do not depend on the thread count or order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from raytda.core import gemm
from raytda.specs import derive_seed

CHUNK_ROWS = 4096


# Tensors below this many elements take torch's scalar (double-precision) sampling path,
# where drawing with std=s is not bit-identical to drawing N(0, 1) and multiplying by s.
_VECTOR_MIN = 16
_fused_ok: bool | None = None
# Below this many elements a thread pool costs more than it saves.
_PARALLEL_MIN = 1 << 22


def _fused_matches() -> bool:
    """Whether ``normal_(0, s)`` equals ``normal_(0, 1) * s`` bit for bit on this build.

    The definition of P is the two-step form; the fused form saves a full pass over P
    (about 10-30% of generation time). Checked once per process, so a torch build whose
    vectorized sampler differs silently falls back to the definition.
    """
    global _fused_ok
    if _fused_ok is None:
        s = 1.0 / math.sqrt(2048)
        a = torch.empty(64, 33).normal_(generator=torch.Generator().manual_seed(1))
        a.mul_(s)
        b = torch.empty(64, 33).normal_(0.0, s, generator=torch.Generator().manual_seed(1))
        _fused_ok = torch.equal(a, b)
    return _fused_ok


def _scaled_normal_(dest: torch.Tensor, std: float, gen: torch.Generator) -> None:
    """dest <- N(0, 1) draws from ``gen`` times ``std`` (float32), in one pass when exact."""
    if dest.numel() >= _VECTOR_MIN and _fused_matches():
        dest.normal_(0.0, std, generator=gen)
    else:
        dest.normal_(generator=gen)
        dest.mul_(std)


def _fill_threads() -> int:
    """Threads used to draw chunks: as many as torch's intra-op pool (at least 1)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


class GaussianProjector:
    """Projects (batch, p) gradients to (batch, k) with a seeded N(0, 1/k) matrix.

    ``memory_bytes`` bounds how much of P is held at once (in the projector's dtype); it
    never changes the values. ``device``/``dtype`` are where and in which precision P is
    held and the product computed; values are always drawn in float32 on the CPU.
    ``cpu_gemm`` picks the BLAS for float32 CPU products (see ``raytda.core.gemm``).
    """

    def __init__(self, n_params: int, k: int, seed: int, memory_bytes: int = 1 << 30,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 cpu_gemm: str = "auto") -> None:
        if cpu_gemm not in gemm.BACKENDS:
            raise ValueError(f"unknown CPU GEMM backend {cpu_gemm!r}; choose one of {gemm.BACKENDS}")
        self.cpu_gemm = cpu_gemm
        if k < 1:
            raise ValueError(f"projection dimension must be >= 1, got {k}")
        if n_params < 1:
            raise ValueError(f"number of parameters must be >= 1, got {n_params}")
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
        self._scratch: torch.Tensor | None = None  # reused block buffer when streaming

    def __getstate__(self) -> dict:
        # P and the streaming buffer are regenerated on demand; never ship them (~GBs).
        state = self.__dict__.copy()
        state["_full"] = state["_scratch"] = None
        return state

    # ------------------------------------------------------------------ generation

    def _rows(self, c0: int, c1: int) -> slice:
        return slice(c0 * CHUNK_ROWS, min(self.n_params, c1 * CHUNK_ROWS))

    def _draw(self, c: int, dest: torch.Tensor) -> None:
        """Write chunk c into ``dest`` (float32, CPU, contiguous, chunk-shaped).

        ``normal_`` on a contiguous float32 CPU tensor takes the same code path whether
        the tensor is a fresh allocation or a row slice of a larger buffer, which is what
        lets chunks be drawn in place with unchanged values.
        """
        gen = torch.Generator(device="cpu").manual_seed(derive_seed("proj", self.seed, c))
        _scaled_normal_(dest, 1.0 / math.sqrt(self.k), gen)

    def _fill(self, c0: int, c1: int, out: torch.Tensor,
              where: torch.Tensor | None = None) -> None:
        """Fill ``out`` (rows of chunks c0..c1-1, any device/dtype) with those chunks.

        ``where`` (optional, all chunks): row i of P goes to ``out[where[i]]`` instead.
        """
        direct = (where is None and out.device.type == "cpu" and out.dtype == torch.float32
                  and out.is_contiguous())

        def one(c: int) -> None:
            r = self._rows(c, c + 1)
            local = slice(r.start - c0 * CHUNK_ROWS, r.stop - c0 * CHUNK_ROWS)
            if direct:
                self._draw(c, out[local])
                return
            # Draw in float32 on the CPU, then convert/copy into place.
            tmp = torch.empty(r.stop - r.start, self.k, dtype=torch.float32)
            self._draw(c, tmp)
            if where is None:
                out[local].copy_(tmp)
            else:
                out.index_copy_(0, where[r].to(out.device), tmp.to(out.device, out.dtype))

        chunks = range(c0, c1)
        threads = min(_fill_threads(), len(chunks))
        if threads <= 1 or out.numel() < _PARALLEL_MIN:
            for c in chunks:
                one(c)
            return
        # Each chunk has its own generator, so threads cannot change the values; torch
        # releases the GIL inside normal_/copy_, so the draws really run in parallel.
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, chunks))

    def _empty(self, rows: int) -> torch.Tensor:
        return torch.empty(rows, self.k, device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ public API

    def chunk(self, c: int) -> torch.Tensor:
        """Rows of chunk c, regenerated from (seed, c); identical on every call."""
        if not 0 <= c < self.n_chunks:
            raise IndexError(f"chunk {c} out of range [0, {self.n_chunks})")
        r = self._rows(c, c + 1)
        out = self._empty(r.stop - r.start)
        self._fill(c, c + 1, out)
        return out

    def blocks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield (row_slice, P_rows) groups of at most the budget (each a fresh tensor)."""
        for c0 in range(0, self.n_chunks, self.chunks_per_block):
            c1 = min(self.n_chunks, c0 + self.chunks_per_block)
            rows = self._rows(c0, c1)
            block = self._empty(rows.stop - rows.start)
            self._fill(c0, c1, block)
            yield rows, block

    def matrix(self, order: torch.Tensor | None = None) -> torch.Tensor:
        """The whole P (p x k) as a fresh tensor, whatever the budget.

        ``order`` (a permutation of the p rows) gives ``P[order]`` instead, built chunk by
        chunk without a second full copy. Only for small p or when P is meant to be
        resident; tests use it as the brute-force reference.
        """
        out = self._empty(self.n_params)
        where = None
        if order is not None:
            if order.shape != (self.n_params,):
                raise ValueError(f"order must be a permutation of {self.n_params} rows, "
                                 f"got shape {tuple(order.shape)}")
            where = torch.empty_like(order)
            where[order] = torch.arange(self.n_params)
        self._fill(0, self.n_chunks, out, where)
        return out

    def scatter_into(self, out: torch.Tensor, where: torch.Tensor) -> None:
        """Write every row of P into ``out`` (any device/dtype): row i to ``out[where[i]]``.

        For a layout that interleaves P's rows with others (the zero-input path's
        grouped P); ``matrix(order)`` is the plain permutation."""
        self._fill(0, self.n_chunks, out, where)

    @property
    def working_bytes(self) -> int:
        """Bytes of P this projector holds for its products: the resident P once made,
        and the block buffer once streaming (a projector cache's kept matrices are the
        cache's, not counted here)."""
        return sum(t.numel() * t.element_size() for t in (self._full, self._scratch)
                   if t is not None)

    def drop_matrix(self) -> None:
        """Let go of the resident P; the next product makes it again (from the cache,
        for a cached projector that still keeps it)."""
        self._full = None

    def materialize(self) -> None:
        """Generate and keep P now (resident projectors only; otherwise a no-op).

        ``project`` does this on first use; calling it up front lets callers time or
        overlap the generation separately from the products.
        """
        if self.resident and self._full is None:
            self._full = self.matrix()

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """grads (batch, p) -> (batch, k) in the projector's dtype."""
        if grads.ndim != 2 or grads.shape[1] != self.n_params:
            raise ValueError(f"gradient width {grads.shape[-1]} != projector's {self.n_params}; "
                             f"expected a (batch, {self.n_params}) tensor, got "
                             f"{tuple(grads.shape)}")
        g = grads.to(device=self.device, dtype=self.dtype)  # no copy when already matching
        if self.resident:
            self.materialize()
            assert self._full is not None
            return gemm.matmul(g, self._full, self.cpu_gemm)
        # Streaming: one block-sized buffer, reused across blocks and calls, so the
        # budget is the only P memory ever held and nothing is reallocated per block.
        block_rows = self.chunks_per_block * CHUNK_ROWS
        if self._scratch is None:
            self._scratch = self._empty(block_rows)
        out = torch.zeros(g.shape[0], self.k, device=self.device, dtype=self.dtype)
        for c0 in range(0, self.n_chunks, self.chunks_per_block):
            c1 = min(self.n_chunks, c0 + self.chunks_per_block)
            rows = self._rows(c0, c1)
            block = self._scratch[: rows.stop - rows.start]
            self._fill(c0, c1, block)
            out += gemm.matmul(g[:, rows], block, self.cpu_gemm)
        return out
