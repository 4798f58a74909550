"""How to compute (never hashed into artifact keys: it does not change results)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

DEFAULT_MEMORY_BUDGET = 8 << 30

#: ``ComputeArgs.train_pack="auto"``: as many models per pack as the memory budget holds,
#: and no pack of fewer than ``plan.packs.SMALLEST_AUTO_PACK``
TRAIN_PACK_AUTO = "auto"

# How one process's memory budget is split among what it keeps (fractions of the total).
# The rest (3/32) is headroom for the job's own working tensors. At the default 8 GiB
# these are the sizes raytda used before there was one budget (4 GiB of member
# payloads, 1 GiB each for a projection, kept projectors and kept models, 256 MiB of
# scores per chunk), so the default measures exactly what it did.
BUDGET_SPLIT = {
    "payload_cache_bytes": 1 / 2,  # member payloads kept by an evaluation job
    "proj_memory_bytes": 1 / 8,  # one projection matrix held resident (else streamed)
    "projector_cache_bytes": 1 / 8,  # projections kept for later jobs of the process
    "model_cache_bytes": 1 / 8,  # model weights kept for later jobs of the process
    "score_chunk_bytes": 1 / 32,  # one chunk of test rows x n_train scores (float64)
}

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12,
          "tib": 1 << 40}


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in '8GiB', '512MiB', '2G' (binary), '3GB' (decimal) or '1048576'."""
    from raytda.specs import SpecError

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m and _UNITS.get(m.group(2).lower())
    if not m or unit is None or float(m.group(1)) * unit < 1:
        raise SpecError(f"{what} {text!r} is not a positive size; write e.g. 8GiB, 512MiB or "
                        f"a number of bytes")
    return int(float(m.group(1)) * unit)


@dataclass(frozen=True)
class ComputeArgs:
    """Batch sizes, memory budget and device for the compute core.

    ``memory_budget_bytes`` is what one process's caches and buffers may hold in all,
    split by :data:`BUDGET_SPLIT`; the in-process executor uses it whole, the Ray
    executor gives each actor its node's budget divided by the actors on that node
    (:meth:`share`). A cache field given explicitly (other than its share) overrides its
    share of the budget, per process.
    """

    grad_batch: int = 500
    forward_batch: int = 2048
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET
    proj_memory_bytes: int | None = None
    device: str = "cpu"
    # Small-batch training gains nothing from intra-op threads and, when several processes
    # share the cores, spinning thread pools slow it down many times over.
    train_threads: int | None = 1
    # BLAS for float32 CPU projections: "auto" (fastest measured), "torch" or "numpy".
    cpu_gemm: str = "auto"
    # TRAK on MLPs: skip the projection work of exactly-zero inputs (same features).
    sparse_inputs: bool = True
    # Aggregation: test rows per chunk of scores are chosen so that one chunk (rows x
    # n_train, float64) stays within this; member payloads are kept in memory up to
    # payload_cache_bytes and read again per chunk beyond it.
    score_chunk_bytes: int | None = None
    payload_cache_bytes: int | None = None
    projector_cache_bytes: int | None = None
    model_cache_bytes: int | None = None
    # Train rows per shard of a member's train side (raytda.plan.shards). None: a member
    # is sharded only when its train features exceed payload_cache_bytes, in shards of
    # half that; scores are the same either way (up to float rounding), so no key has it.
    train_shard_rows: int | None = None
    # The most training jobs (LDS models, naive members, adapters on one base) an executor
    # trains together as one stacked pack (raytda.core.stacked) on one worker, each still
    # its own artifact. "auto" (the default): every compatible ready job, at least
    # plan.packs.SMALLEST_AUTO_PACK of them, cut into packs that fit half the memory
    # budget (and, on Ray, spread over the actors); 1: every model alone. Packing never
    # changes a number: before a pack trains, its first batch's losses and gradients are
    # compared bit for bit with the same models computed alone, and a model whose layers
    # round differently under vmap (a gated LayerNorm net does, tests/test_user_task.py)
    # trains alone. Never in a key (benchmarks/results/packing_default_*.md measures the
    # gain).
    train_pack: int | str = TRAIN_PACK_AUTO

    def __post_init__(self) -> None:
        from raytda.specs import SpecError

        if self.grad_batch < 1 or self.forward_batch < 1:
            raise SpecError(f"batch sizes must be >= 1, got grad_batch={self.grad_batch}, "
                            f"forward_batch={self.forward_batch}")
        if self.cpu_gemm not in ("auto", "torch", "numpy"):
            raise SpecError(f"cpu_gemm must be 'auto', 'torch' or 'numpy', got {self.cpu_gemm!r}")
        if not isinstance(self.memory_budget_bytes, int) or self.memory_budget_bytes < 1:
            raise SpecError(f"memory budget must be a positive number of bytes, got "
                            f"{self.memory_budget_bytes!r}")
        if self.train_shard_rows is not None and (
                not isinstance(self.train_shard_rows, int) or self.train_shard_rows < 1):
            raise SpecError(f"train_shard_rows must be an integer >= 1 (rows per train "
                            f"shard) or None, got {self.train_shard_rows!r}")
        if self.train_pack != TRAIN_PACK_AUTO and (
                not isinstance(self.train_pack, int) or isinstance(self.train_pack, bool)
                or self.train_pack < 1):
            raise SpecError(f"train_pack must be an integer >= 1 (training jobs per stacked "
                            f"pack) or {TRAIN_PACK_AUTO!r}, got {self.train_pack!r}")
        for name in BUDGET_SPLIT:
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.budget_share(name))
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be >= 1 byte, got {getattr(self, name)!r}")

    @property
    def pack_limit(self) -> int | None:
        """The most training jobs per pack: None for ``"auto"`` (only the memory budget
        limits a pack), 1 when packing is off."""
        return None if self.train_pack == TRAIN_PACK_AUTO else int(self.train_pack)

    def budget_share(self, name: str) -> int:
        """Bytes of the budget that cache ``name`` (a key of BUDGET_SPLIT) gets."""
        return max(1, int(self.memory_budget_bytes * BUDGET_SPLIT[name]))

    def share(self, n: int) -> ComputeArgs:
        """These arguments for one of ``n`` processes sharing this budget (a node's actors):
        the budget and every cache that follows it divided by ``n``; explicit ones kept."""
        n = max(1, int(n))
        kept = {k: None if getattr(self, k) == self.budget_share(k) else getattr(self, k)
                for k in BUDGET_SPLIT}
        return dataclasses.replace(self, memory_budget_bytes=max(1, self.memory_budget_bytes
                                                                 // n), **kept)

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (None: leave the setting alone)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
