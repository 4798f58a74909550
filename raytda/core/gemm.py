"""Dense float32 products on the CPU through the fastest BLAS loaded in the process.

The projection ``G @ P`` is almost all of TRAK's serving time on a CPU. torch's wheels
call MKL, numpy's call OpenBLAS, and which is faster depends on the processor: on the AMD
EPYC (Zen 4) machines this project runs CI on, OpenBLAS runs a (1000 x 109k) @ (109k x
2048) product at ~195 GFLOP/s against MKL's ~155. Both compute the same float32 product;
only the summation order (so the last bits) differs. ``numpy`` shares the tensors' memory,
so routing through it copies nothing.

Backends: ``"torch"``, ``"numpy"`` or ``"auto"``. ``auto`` is a fixed rule, never a
timing: numpy's OpenBLAS on AMD processors (where it was measured faster, above), torch's
MKL everywhere else (MKL is Intel's own). A timed choice can flip under load between runs
of one machine, and with it the last bits of every feature, which near-singular TRAK
kernels amplify into different LDS digits; the rule gives the same backend on every run of
a machine, and results record it (``cpu_gemm`` in each block's meta). Everything that is
not a float32 CPU product goes to torch whatever the choice.
"""

from __future__ import annotations

from functools import cache

import torch

BACKENDS = ("auto", "torch", "numpy")


@cache
def _openblas():
    """threadpoolctl handle on numpy's OpenBLAS, or None when numpy uses another BLAS."""
    try:
        import numpy  # noqa: F401  (loads the BLAS so threadpoolctl can see it)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    handle = ThreadpoolController().select(internal_api="openblas")
    return handle if handle.lib_controllers else None


def _numpy_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import numpy as np

    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.float32)
    # numpy's BLAS has its own thread pool; keep it to torch's count so a process limited
    # to n threads (a Ray worker, a training job) never runs more than n.
    with _openblas().limit(limits=torch.get_num_threads()):
        np.matmul(a.numpy(), b.numpy(), out=out.numpy())
    return out


def cpu_vendor() -> str:
    """The CPU vendor string (``AuthenticAMD``, ``GenuineIntel``, ...), or "" if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@cache
def _auto_choice() -> str:
    if _openblas() is None:
        return "torch"
    return "numpy" if cpu_vendor() == "AuthenticAMD" else "torch"


def resolve(backend: str) -> str:
    """The concrete backend (``torch`` or ``numpy``) that ``backend`` means here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown CPU GEMM backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return _auto_choice()
    if backend == "numpy" and _openblas() is None:
        raise ValueError("cpu_gemm='numpy' needs numpy built on OpenBLAS and threadpoolctl; "
                         "use 'torch' or 'auto'")
    return backend


def matmul(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``a @ b`` for 2-D tensors, on the chosen BLAS when both are float32 on the CPU."""
    cpu_f32 = (a.device.type == b.device.type == "cpu"
               and a.dtype == b.dtype == torch.float32 and a.ndim == b.ndim == 2
               and not (a.requires_grad or b.requires_grad))
    if not cpu_f32 or resolve(backend) == "torch":
        return a @ b
    return _numpy_matmul(a, b)
