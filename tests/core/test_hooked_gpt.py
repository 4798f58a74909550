"""raytda's own GPT under the hooked feature passes: its position embedding is broadcast
over the batch, so every sample's features are the explicit sketch of its own gradient.

The bug this guards: with position ids of shape (T,), the hooked pass read the position
embedding's T rows as if they were samples whenever T was a multiple of the batch size,
and split one sample's positions between several (silently wrong features).
"""

from __future__ import annotations

import pytest
import torch
from test_tensor_sketch import assert_is_sketch, exact_grads, features

from raytda.core.factorized import FactorizedProjector
from raytda.core.network import Network
from raytda.core.outputs import GENERATIVE
from raytda.core.tensor_sketch import SketchProjector
from raytda.models.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gpt_and_tokens(n: int = 4, t: int = 8) -> tuple[Network, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lm = GPT(vocab=11, n_layer=1, n_head=2, d_model=8, block_size=t, dropout=0.0)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (n, t + 1), generator=gen)
    return Network(lm, ids[:1, :-1]).eval(), ids[:, :-1], ids[:, 1:]


def test_sketch_of_each_sample_is_its_own_gradient_when_t_is_a_multiple_of_the_batch():
    model, x, y = gpt_and_tokens(n=4, t=8)  # T = 8 = 2 x batch 4: the case that broke
    proj = SketchProjector(model, 32, seed=2)
    got = features(proj, x, y, batch_size=4, output=GENERATIVE)
    assert_is_sketch(proj, got, exact_grads(model, x, y, output=GENERATIVE))


def test_factorized_rows_do_not_depend_on_their_batch():
    model, x, y = gpt_and_tokens(n=4, t=8)
    proj = FactorizedProjector(model, 64, seed=2)
    whole = features(proj, x, y, batch_size=4, output=GENERATIVE)
    alone = features(proj, x, y, batch_size=1, output=GENERATIVE)
    # float32 sums in another order: differences measured below 1e-6 of the largest entry
    torch.testing.assert_close(whole, alone, rtol=0, atol=1e-5 * alone.abs().max().item())
