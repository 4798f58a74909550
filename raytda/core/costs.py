"""Cost measurement (resource time, wall time, peak memory) and the paper's analytic cost
model (app. E).

A cost is the resources a job used, not the wall time it took, so it does not depend on
what else runs on the node (other jobs of the sweep, other tenants, an editor):

* on a CPU, the CPU time of the job's threads (:class:`CpuTime`). Jobs run with as many
  torch threads as they reserve CPUs. With one thread (the default), torch runs every
  kernel in the calling thread, so that thread's own CPU clock is exactly the job's work
  (checked: over a GEMM and MLP backward loop its ``thread_time`` equals the process's
  ``process_time`` to the microsecond), and it leaves out the memory sampler of
  :func:`measure` and whatever else the process runs (Ray's core-worker threads, a
  progress display). With more threads the intra-op pool's threads are not the caller,
  so it reads the whole process's CPU time: that includes the pool's spin-waiting, which
  grows when the node is busy;
* on a GPU, the device time between two CUDA events recorded on the current stream
  around the work (:class:`DeviceTime`). That is the job's device time when it has the
  device to itself; on a device shared by several actors it also counts the others'
  kernels interleaved with its own.

Wall time is recorded beside the cost (``Measured.wall_s``), never charged.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

#: seconds since the stopwatch started, read any number of times
Elapsed = Callable[[], float]


class Clock(Protocol):
    """What a cost is measured in: ``name`` (``"cpu"`` or ``"device"``), recorded with it."""

    name: str

    def start(self) -> Elapsed:
        """Start a stopwatch; the function returned reads the seconds spent since."""
        ...


class CpuTime:
    """CPU seconds of the job's threads: the calling thread's own CPU clock when torch runs
    one thread (exact), else the process's (see the module docstring). Which one is
    decided when the stopwatch starts, so one stopwatch never mixes the two."""

    name = "cpu"

    def start(self) -> Elapsed:
        read = time.thread_time if torch.get_num_threads() == 1 else time.process_time
        t0 = read()
        return lambda: read() - t0


class DeviceTime:
    """Device seconds between two events recorded on the current CUDA stream.
    ``event``: the event class (``torch.cuda.Event``; tests pass a fake one)."""

    name = "device"

    def __init__(self, event: Callable[..., Any] | None = None) -> None:
        self._event = event

    def start(self) -> Elapsed:
        event = self._event or torch.cuda.Event
        first = event(enable_timing=True)
        first.record()

        def elapsed() -> float:
            now = event(enable_timing=True)
            now.record()
            now.synchronize()  # the work before it has run on the device
            return float(first.elapsed_time(now)) / 1e3  # ms -> s

        return elapsed


def clock_for(device: str) -> Clock:
    """The clock a job's cost on ``device`` is read from: device time on CUDA, else CPU
    time (on other accelerators, the host thread's CPU time: a lower bound)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return DeviceTime()
    return CpuTime()


def stopwatch(device: str = "cpu", clock: Clock | None = None) -> Elapsed:
    """Start measuring the cost of work on ``device`` (``clock``: the default
    :func:`clock_for` it); returns what reads the seconds spent since."""
    return (clock or clock_for(device)).start()


@dataclass
class Measured:
    """Filled in when the ``measure`` block exits: ``seconds`` is the cost (``clock``'s
    seconds: CPU or device), ``wall_s`` the wall time, which no cost includes."""

    seconds: float = 0.0
    wall_s: float = 0.0
    clock: str = ""
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


class KernelPeak:
    """The process's peak resident set size from the kernel's own high-water mark (Linux
    ``VmHWM``), restarted at the current size by writing 5 to ``/proc/self/clear_refs``.

    Exact, where a sampler misses spikes shorter than its interval (a large temporary freed
    within milliseconds), and it needs no thread: a sampler thread wakes every few
    milliseconds and takes the GIL from the job it measures, a switch the job's own CPU
    time can pay for.

    Measurements may nest (a job measuring its parts): before one restarts the mark, every
    measurement still open folds the mark so far into its own peak.
    """

    _lock = threading.Lock()
    _open: list[list[int]] = []  # per open measurement: [the peak it has seen]

    @staticmethod
    def read() -> tuple[int, int] | None:
        """(high-water mark, current) resident bytes, or None where the kernel has none."""
        try:
            with open("/proc/self/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            return (int(fields["VmHWM"].split()[0]) * 1024,
                    int(fields["VmRSS"].split()[0]) * 1024)
        except (OSError, KeyError, ValueError):
            return None

    @classmethod
    def available(cls) -> bool:
        """Whether this process can read and restart the mark."""
        return cls.read() is not None and os.access("/proc/self/clear_refs", os.W_OK)

    @classmethod
    def start(cls) -> Callable[[], int] | None:
        """Restart the mark; returns what reads the peak above the size at this call, or
        None where the mark cannot be read or restarted (not Linux, a locked-down /proc)."""
        with cls._lock:
            now = cls.read()
            if now is None:
                return None
            for peak in cls._open:
                peak[0] = max(peak[0], now[0])
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                return None
            after = cls.read()
            if after is None:
                return None
            base = after[1]
            mine = [base]
            cls._open.append(mine)

        def stop() -> int:
            with cls._lock:
                now = cls.read()
                if mine in cls._open:
                    cls._open.remove(mine)
                mine[0] = max(mine[0], now[0] if now else 0)
                return max(0, mine[0] - base)

        return stop


def _sampled_peak(interval_s: float) -> Callable[[], int]:
    """The fallback: the peak resident set size sampled every ``interval_s`` by a thread
    (short spikes between samples can be missed)."""
    stop = threading.Event()
    base = _rss()
    peak = [base]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()

    def done() -> int:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss())
        return int(peak[0] - base)

    return done


@contextmanager
def measure(device: str = "cpu", interval_s: float = 0.005, clock: Clock | None = None):
    """Measure a block's cost (:func:`stopwatch`), wall time and peak memory above the
    starting level.

    On CUDA this is the allocator's peak; on CPU, the process's peak resident set size
    above its size at the start: the kernel's high-water mark (:class:`KernelPeak`) where
    it can be read, else sampled every ``interval_s`` by a thread. Memory the process
    already held, freed but resident, does not show.
    """
    m = Measured()
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    else:
        _release_free_heap()
        peak_above = KernelPeak.start() or _sampled_peak(interval_s)
    clock = clock or clock_for(device)
    m.clock = clock.name
    # The cost's interval lies inside the wall time's, so a one-thread cost is never
    # above its wall time.
    t0 = time.perf_counter()
    spent = clock.start()
    try:
        yield m
    finally:
        if cuda:
            torch.cuda.synchronize()
            m.peak_bytes = int(torch.cuda.max_memory_allocated() - base_cuda)
        else:
            m.peak_bytes = peak_above()
        m.seconds = spent()
        m.wall_s = time.perf_counter() - t0


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
