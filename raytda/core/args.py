"""How to compute (never hashed into artifact keys: it does not change results)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ComputeArgs:
    """Batch sizes, memory budgets and device for the compute core."""

    grad_batch: int = 500
    forward_batch: int = 2048
    proj_memory_bytes: int = 1 << 30
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
    score_chunk_bytes: int = 1 << 28
    payload_cache_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        if self.grad_batch < 1 or self.forward_batch < 1:
            raise ValueError("batch sizes must be >= 1")
        if self.proj_memory_bytes < 1:
            raise ValueError("proj_memory_bytes must be >= 1")
        if self.cpu_gemm not in ("auto", "torch", "numpy"):
            raise ValueError(f"cpu_gemm must be 'auto', 'torch' or 'numpy', got {self.cpu_gemm!r}")

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
