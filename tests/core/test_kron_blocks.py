"""How the total k is split between blocks, and the factors each block draws."""

from __future__ import annotations

import pytest
import torch

from raytda.core.kron_blocks import gaussian_factor, kron_dims, split_k
from raytda.specs import SpecError


def test_split_k_sums_and_caps():
    dims = split_k(100, [4, 10_000, 400, 1], "sqrt")
    assert sum(dims) == 100 and dims[0] <= 4 and dims[3] == 1
    assert dims[1] > dims[2] > dims[0]  # sqrt rule: more for bigger blocks
    # equal (the default): capped blocks keep all their parameters, the rest share alike
    assert split_k(100, [4, 10_000, 400, 1]) == [4, 48, 47, 1]
    assert split_k(10, [3, 3], "equal") == [3, 3]  # capped at the block sizes
    assert split_k(7, [100, 100, 100], "params") in ([3, 2, 2], [2, 3, 2], [2, 2, 3])
    with pytest.raises(SpecError, match="smaller than the number of projected blocks"):
        split_k(2, [5, 5, 5])
    assert kron_dims(50, 100, 100) == (7, 7)
    assert kron_dims(50, 2, 100) == (2, 25)  # one side capped: the other takes the rest


def test_gaussian_factor_is_the_identity_at_full_width_and_fixed_by_its_seed():
    assert torch.equal(gaussian_factor(5, 5, seed=1, device=torch.device("cpu")), torch.eye(5))
    a = gaussian_factor(64, 300, seed=7, device=torch.device("cpu"))
    assert torch.equal(a, gaussian_factor(64, 300, seed=7, device=torch.device("cpu")))
    assert not torch.equal(a, gaussian_factor(64, 300, seed=8, device=torch.device("cpu")))
    # N(0, 1/k) entries: E[P^T P] = I, so projected inner products are unbiased
    assert abs(float(a.pow(2).sum(0).mean()) - 1.0) < 0.05
