"""The dense features part counts and drops the projection memory it holds, through the
projector's own methods."""

from __future__ import annotations

import torch

from raytda.core.args import ComputeArgs
from raytda.core.grads import n_trainable
from raytda.core.outputs import CLASSIFICATION
from raytda.core.projection import CHUNK_ROWS, GaussianProjector
from raytda.features.dense import DenseFeaturizer

K = 8


def test_held_bytes_follow_the_resident_p_through_prepare_and_release(toy_model):
    proj = GaussianProjector(n_trainable(toy_model), K, seed=3)
    fz = DenseFeaturizer.with_projector(toy_model, proj, ComputeArgs(), CLASSIFICATION)
    assert fz.held_bytes == 0  # P is made on first use
    fz.prepare()
    assert fz.held_bytes == fz.prepared_bytes == proj.n_params * K * 4
    fz.release()
    assert fz.held_bytes == 0
    x = torch.randn(3, proj.n_params)
    torch.testing.assert_close(proj.project(x), x @ proj.matrix())  # made again on use


def test_a_streaming_projector_counts_its_block_buffer():
    proj = GaussianProjector(3 * CHUNK_ROWS, K, seed=3, memory_bytes=CHUNK_ROWS * K * 4)
    assert not proj.resident and proj.working_bytes == 0
    proj.project(torch.randn(2, proj.n_params))
    assert proj.working_bytes == CHUNK_ROWS * K * 4  # one block, never the whole P


def test_scatter_into_places_each_row_of_p_where_asked():
    proj = GaussianProjector(50, K, seed=1)
    where = torch.randperm(60, generator=torch.Generator().manual_seed(0))[:50]
    out = torch.zeros(60, K)
    proj.scatter_into(out, where)
    torch.testing.assert_close(out[where], proj.matrix(), rtol=0, atol=0)
    untouched = torch.ones(60, dtype=torch.bool)
    untouched[where] = False
    assert not out[untouched].any()
