"""The evaluation job: its own peak memory counts in the configuration's peak_mem."""

from __future__ import annotations

import numpy as np

from raytda.api import Sweep
from raytda.work import evaluate as evaluate_module

HELD_BYTES = 128 << 20


def test_peak_mem_covers_the_evaluation_job(tmp_path, monkeypatch):
    """An evaluation that holds 128 MiB (far above any toy training or serving, which
    stay at a few MiB) must show at least that in peak_mem_bytes: before, peak_mem was
    the servings' peak only and missed aggregation and LDS."""
    held: list[np.ndarray] = []
    real_get = evaluate_module.PayloadCache.get

    def get(self, key, *prepare):
        if not held:  # touched pages, kept until the test ends: resident for sure
            held.append(np.ones(HELD_BYTES // 8))
        return real_get(self, key, *prepare)

    monkeypatch.setattr(evaluate_module.PayloadCache, "get", get)
    sweep = Sweep("toy-mlp", ensembles=["naive:I=1"], lds=None, proj_dim=8,
                  store=str(tmp_path / "store"), progress=False)
    row = sweep.run().iloc[0]
    held.clear()
    # The measured RSS rise of the evaluation includes every page of the held array; only
    # memory freed during the job could offset it, and the job frees nothing it held before.
    assert row["eval_peak_bytes"] >= HELD_BYTES
    assert row["peak_mem_bytes"] >= row["eval_peak_bytes"]
