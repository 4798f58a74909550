"""Cost measurement and stored parameters (the kinds' analytic times: tests/ensembles)."""

from __future__ import annotations

import mmap
import time

from raytda.core.costs import measure
from raytda.ensembles import Ensemble


def test_stored_parameters_grow_with_I_only():
    dropout = Ensemble("dropout", 5, 10)
    assert dropout.kind_class.stored_params(dropout, 110_000) == 550_000


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
    assert m.seconds >= 0.09  # it slept 0.1 s (no upper bound: the machine may be busy)
    assert m.peak_bytes > size // 2
    block.close()
