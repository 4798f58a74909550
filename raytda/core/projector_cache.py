"""Materialized Gaussian projectors kept per process, within a memory budget (LRU).

A TRAK member's projection matrix P is a pure function of (n_params, k, seed, dtype,
device), yet building it (drawing n_params x k normals, and on the sparse-input path a
row-permuted copy) is a sizeable part of serving a small model. A worker that serves
several members sharing a projection (the d-th projection-only member of a model and its
d-th dropout member, say) builds it once here and reuses it.

Costs stay the same whether or not the cache hit: a projector records how long building
each of its matrices took, and a job that reuses one is charged that time
(:meth:`CachedProjector.take_reused_s`), so a member's serving cost does not depend on
what its worker happened to serve before.

The budget is ``ComputeArgs.projector_cache_bytes`` (a share of the process's memory
budget, 1 GiB by default), which the job runner applies with :func:`set_budget`;
:func:`stats` counts builds and hits in this process.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict

import torch

from raytda.core.args import ComputeArgs
from raytda.core.costs import stopwatch
from raytda.core.projection import GaussianProjector

_budget = ComputeArgs().projector_cache_bytes
_cache: OrderedDict[tuple, CachedProjector] = OrderedDict()
_stats: Counter[str] = Counter()


def _tag(order: torch.Tensor | None) -> str | None:
    """A short key for a row order (None: P's own order)."""
    if order is None:
        return None
    return hashlib.sha1(order.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class CachedProjector(GaussianProjector):
    """A GaussianProjector that keeps the matrices it generated (same values, same API).

    ``matrix(order)`` returns the kept tensor on a repeat call with the same order, so
    callers must not modify it in place (raytda's callers only read it).
    """

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._kept: dict[str | None, torch.Tensor] = {}
        self._build_s: dict[str | None, float] = {}
        self._reused_s = 0.0
        self._full_charged = False

    @property
    def held_bytes(self) -> int:
        """Everything this projector holds: kept matrices, the resident P and the
        streaming buffer of a non-resident one (each tensor counted once)."""
        held = [*self._kept.values(), self._full, self._scratch]
        return sum({t.data_ptr(): t.numel() * t.element_size()
                    for t in held if t is not None}.values())

    def release(self) -> None:
        """Drop every tensor this projector holds (it regenerates them on demand)."""
        self._kept.clear()
        self._full = self._scratch = None

    def begin_job(self) -> None:
        """Start charging reuse to a new job."""
        self._reused_s = 0.0
        self._full_charged = False

    def take_reused_s(self) -> float:
        """Build time this job saved by reusing kept matrices (then reset to 0)."""
        out, self._reused_s = self._reused_s, 0.0
        return out

    def matrix(self, order: torch.Tensor | None = None) -> torch.Tensor:
        tag = _tag(order)
        if tag in self._kept:
            _stats["projection_hits"] += 1
            self._reused_s += self._build_s[tag]
            return self._kept[tag]
        spent = stopwatch(str(self.device))  # a cost: CPU or device seconds
        out = super().matrix(order)
        self._build_s[tag] = spent()
        _stats["projections_built"] += 1
        size = out.numel() * out.element_size()
        if size <= _budget:
            self._kept[tag] = out
            _trim()
        return out

    def materialize(self) -> None:
        # The base class keeps P in ``_full`` once; a reused projector charges its build
        # to the first job that uses it after ``begin_job``.
        if not self.resident:
            return
        if self._full is None or not self._full_charged:
            self._full = self.matrix()
            self._full_charged = True


def _trim() -> None:
    """Drop least recently used projectors until what is kept fits the budget."""
    while len(_cache) > 1 and sum(p.held_bytes for p in _cache.values()) > _budget:
        _, old = _cache.popitem(last=False)
        _stats["projection_evictions"] += 1
        old.release()


def projector(n_params: int, k: int, seed: int, memory_bytes: int = 1 << 30,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              cpu_gemm: str = "auto") -> CachedProjector:
    """The projector for these arguments: kept from an earlier job of this process, or new.

    Key: (n_params, k, seed, dtype, device) plus the memory budget and BLAS choice, which
    decide how P is held and multiplied (never its values).
    """
    key = (n_params, k, seed, str(dtype), str(torch.device(device)), memory_bytes, cpu_gemm)
    proj = _cache.get(key)
    if proj is None:
        proj = CachedProjector(n_params, k, seed, memory_bytes, device, dtype, cpu_gemm=cpu_gemm)
        if _budget > 0:
            _cache[key] = proj
    else:
        _cache.move_to_end(key)
        _stats["projector_reuses"] += 1
    # Earlier jobs' projectors may have grown (a streaming buffer, a resident P) since
    # they were last trimmed; the budget covers all of it.
    _trim()
    proj.begin_job()
    return proj


def budget() -> int:
    """This process's cache budget in bytes."""
    return _budget


def set_budget(nbytes: int) -> None:
    """Change this process's cache budget (0 disables keeping matrices)."""
    global _budget
    _budget = int(nbytes)
    if _budget <= 0:
        for p in _cache.values():
            p.release()
        _cache.clear()
    else:
        _trim()


def stats() -> dict[str, int]:
    """Counts in this process: projections built, hits, evictions; bytes held."""
    out = {k: int(_stats[k]) for k in ("projections_built", "projection_hits",
                                        "projection_evictions")}
    out["projection_cache_bytes"] = int(sum(p.held_bytes for p in _cache.values()))
    return out


def clear() -> None:
    """Forget every kept projector and reset the counts (tests)."""
    for p in _cache.values():
        p.release()
    _cache.clear()
    _stats.clear()
