"""Cost measurement and stored parameters (the kinds' analytic times: tests/ensembles).

Costs are CPU time (or device time), so the bounds below hold on a busy machine: they
compare what the job did with its own thread, never a measured time with a wall-clock
expectation. Spread measured on this 2-core machine under other engineers' load (load average 6.8,
10 runs each): a 0.5 s sleep costs 0.0002-0.0006 s of CPU; 0.3 s of CPU spent spinning
reads 0.3002-0.3006 s; a neighbour thread's 0.4 s of spinning costs the job 0.0002-0.0005 s.
"""

from __future__ import annotations

import mmap
import threading
import time

import pytest
import torch

from raytda.core.args import torch_threads
from raytda.core.costs import CpuTime, DeviceTime, KernelPeak, measure, stopwatch
from raytda.ensembles import Ensemble


def spin_cpu(seconds: float) -> None:
    """Busy this thread until it has used ``seconds`` of CPU (however long that takes)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_stored_parameters_grow_with_I_only():
    dropout = Ensemble("dropout", 5, 10)
    assert dropout.kind_class.stored_params(dropout, 110_000) == 550_000


def test_a_sleeping_job_costs_no_cpu_and_a_spinning_one_its_cpu():
    with torch_threads(1):
        with measure() as idle:
            time.sleep(0.5)
        with measure() as busy:
            spin_cpu(0.3)
    assert idle.clock == busy.clock == "cpu"
    assert idle.seconds < 0.25 and idle.wall_s >= 0.49
    # the spin is 0.3 s of this thread's CPU by construction; measure's own sampler thread
    # and the interval's edges add next to nothing
    assert 0.29 <= busy.seconds < 0.45
    # one thread runs at most all of the wall time it is given
    assert busy.seconds <= busy.wall_s


def test_another_threads_work_is_not_the_jobs_with_one_torch_thread():
    """The cost is the job thread's own clock: a neighbour thread (Ray's, a progress
    display) spinning in the same process is not charged to it."""
    def spin() -> None:
        spin_cpu(0.3)

    with torch_threads(1):
        spent = stopwatch("cpu")
        other = threading.Thread(target=spin)
        other.start()
        other.join()
        cost = spent()
    assert cost < 0.15


def test_with_several_torch_threads_the_cost_is_the_processs_cpu_time():
    """The intra-op pool's threads are not the caller's: the process clock counts them
    (and, as any process clock, a neighbour thread's work)."""
    def spin() -> None:
        spin_cpu(0.3)

    with torch_threads(2):
        spent = CpuTime().start()
        other = threading.Thread(target=spin)
        other.start()
        other.join()
        cost = spent()
    assert cost >= 0.29


class FakeEvent:
    """A CUDA event on a fake device whose clock the test sets (milliseconds)."""

    now_ms = 0.0
    synced: list[float] = []

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at: float | None = None

    def record(self) -> None:
        self.at = FakeEvent.now_ms

    def synchronize(self) -> None:
        FakeEvent.synced.append(self.at)

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.at is not None and end.at is not None
        return end.at - self.at


def test_on_a_gpu_the_cost_is_device_time_between_events(monkeypatch):
    """The device path: events recorded around the work, the end one synchronized before
    it is read, milliseconds turned into seconds; the host's time is not the cost."""
    FakeEvent.now_ms, FakeEvent.synced = 1000.0, []
    with measure(clock=DeviceTime(FakeEvent)) as m:
        FakeEvent.now_ms += 250.0  # the device ran 0.25 s of kernels
        time.sleep(0.3)  # while the host waited
    assert m.clock == "device"
    assert m.seconds == 0.25 and m.wall_s >= 0.29
    assert FakeEvent.synced == [1250.0]
    spent = stopwatch("cuda", clock=DeviceTime(FakeEvent))
    FakeEvent.now_ms += 40.0
    assert spent() == 0.04
    FakeEvent.now_ms += 60.0
    assert spent() == 0.1  # read again: still from the same start


def test_a_cpu_training_costs_its_threads_cpu_time():
    """fit's loop cost is CPU time, recorded with its wall time (cost within wall)."""
    from raytda.core.train import fit, loop_clock
    from raytda.specs import Recipe

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    with torch_threads(1), loop_clock() as loops:
        _, seconds = fit(model, Recipe(epochs=2, batch_size=16, lr=0.1), (x, y), seed=0)
    assert len(loops) == 1 and loops[0].cost_s == seconds
    assert 0 < seconds <= loops[0].wall_s


def test_measure_records_wall_time_and_memory():
    size = 40 * 2**20
    with measure() as m:
        time.sleep(0.05)
        # A fresh anonymous mapping, written page by page: new resident memory whatever the
        # allocator holds from earlier tests.
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
        time.sleep(0.05)
    assert m.wall_s >= 0.09  # it slept 0.1 s (no upper bound: the machine may be busy)
    assert m.peak_bytes > size // 2
    block.close()


def _touch_and_free(size: int) -> None:
    """A fresh mapping written page by page, then unmapped at once: resident for well under
    the sampler's 5 ms on this machine, so only an exact peak sees it."""
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    block.close()


@pytest.mark.skipif(not KernelPeak.available(),
                    reason="no kernel high-water mark here (not Linux)")
def test_kernel_peak_sees_a_freed_spike_and_nested_measurements():
    size = 64 * 2**20
    with measure() as outer:
        _touch_and_free(size)
        with measure() as inner:  # restarts the mark: the outer must keep the first spike
            pass
    assert outer.peak_bytes > size // 2
    assert inner.peak_bytes < size // 2
    with measure() as outer:
        with measure() as inner:
            _touch_and_free(size)
    assert inner.peak_bytes > size // 2 and outer.peak_bytes > size // 2
