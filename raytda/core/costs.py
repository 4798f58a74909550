"""Cost measurement (wall time, peak memory) and the paper's analytic cost model (app. E)."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class Measured:
    """Filled in when the ``measure`` block exits."""

    seconds: float = 0.0
    peak_bytes: int = 0
    extra: dict = field(default_factory=dict)


def _rss() -> int:
    try:
        import psutil
        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:  # psutil ships with ray[default]; fall back to ru_maxrss
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so that memory freed by earlier work in
    this process is not silently reused below the measured baseline."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline is just less exact
        pass


@contextmanager
def measure(device: str = "cpu", interval_s: float = 0.005):
    """Time a block and record its peak memory above the starting level.

    On CUDA this is the allocator's peak; on CPU, the peak resident set size sampled every
    ``interval_s`` by a thread (an estimate: short spikes between samples can be missed, and
    memory the process already held, freed but resident, does not show).
    """
    m = Measured()
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    stop = threading.Event()
    if not cuda:
        _release_free_heap()
    base = _rss()
    peak = [base]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            stop.wait(interval_s)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    else:
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        if cuda:
            torch.cuda.synchronize()
            m.peak_bytes = int(torch.cuda.max_memory_allocated() - base_cuda)
        else:
            stop.set()
            thread.join()
            peak[0] = max(peak[0], _rss())
            m.peak_bytes = int(peak[0] - base)
        m.seconds = time.perf_counter() - t0


@dataclass(frozen=True)
class UnitCosts:
    """Per-unit times of appendix E (seconds): ``serve`` is one member's features, scores
    and Q; ``serve_forward_only`` is one forward-only Q pass. Each ensemble kind turns
    them into its analytic costs (``EnsembleKind.train_time`` / ``serve_time``).

    For the LoRA Ensemble, ``train`` is T_Train,Base (one base model on the full set),
    ``train_lora`` is T_Train,LoRA (one adapter) and ``serve`` is T_Serving,LoRA (one
    adapter member, gradients over the adapter only).
    """

    train: float
    serve: float
    serve_forward_only: float = 0.0
    train_lora: float = 0.0


@dataclass(frozen=True)
class MeasuredUnits:
    """What a configuration's jobs measured, per unit (seconds, means over the units), for
    its ensemble kind to turn into :class:`UnitCosts` (``EnsembleKind.unit_costs``).

    ``train``: one model's training; ``train_lora``: one adapter's (0 without adapters);
    ``member``: one feature member's own serving plus scoring the test set against it;
    ``shared``: what a feature job storing several members took beyond their own shares
    (one gradient pass for all of them), per such job, 0 where no job shares; ``q``: one
    Q pass (0 when the method needs no Q).
    """

    train: float
    member: float
    q: float = 0.0
    shared: float = 0.0
    train_lora: float = 0.0
