"""The model output f (classification margin) and TRAK's Q = 1 - p_y."""

from __future__ import annotations

import torch

from raytda.core.outputs import margin, one_minus_p


def test_margin_and_q_match_their_definitions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 5, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (20,), generator=gen)
    p = torch.softmax(logits, dim=1)[torch.arange(20), y]
    torch.testing.assert_close(margin(logits, y), torch.log(p / (1 - p)))
    torch.testing.assert_close(one_minus_p(logits, y), 1 - p)


def test_margin_and_q_stay_accurate_for_confident_predictions():
    """1 - p_y ~ 1e-13 in float32: naive log(p/(1-p)) gives inf and 1 - p gives 0."""
    logits = torch.tensor([[30.0, 0.0, -5.0]])
    y = torch.tensor([0])
    assert float(1 - torch.softmax(logits, 1)[0, 0]) == 0.0  # the naive route fails here
    rest = torch.logsumexp(torch.tensor([0.0, -5.0], dtype=torch.float64), 0)
    torch.testing.assert_close(margin(logits, y).double(), (30.0 - rest).reshape(1))
    q_exact = torch.exp(rest - torch.logsumexp(logits[0].double(), 0))
    torch.testing.assert_close(one_minus_p(logits, y).double(), q_exact.reshape(1), rtol=1e-5,
                               atol=0)
    # The opposite extreme: the true class is hopeless.
    assert torch.isfinite(margin(-logits, y)).all()
    torch.testing.assert_close(one_minus_p(-logits, y), torch.ones(1))


def test_margin_batched_leading_dims():
    logits = torch.randn(2, 3, 4)
    y = torch.randint(0, 4, (2, 3))
    flat = margin(logits.reshape(6, 4), y.reshape(6)).reshape(2, 3)
    torch.testing.assert_close(margin(logits, y), flat)
