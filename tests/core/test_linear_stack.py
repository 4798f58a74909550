"""The linear fast path: found by the forward's structure, not by the model's class, and
equal to the general (vmap) path; models it would get wrong fall back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytda.core import grads
from raytda.core.grads import linear_layout, n_params, per_sample_grads
from raytda.core.linear_stack import linear_stack
from raytda.core.masks import MaskSpec
from raytda.core.network import Network
from raytda.core.projection import GaussianProjector
from raytda.core.sparse_input import SparseInputProjection

IN, HID, OUT = 6, 5, 3
FIXED = MaskSpec(seed=4, rate=0.3)
PER_SAMPLE = MaskSpec(seed=4, rate=0.3, mode="per-sample")
# Fast path against vmap on these models: max abs difference measured 0.0 on this CPU
# (gradients up to 3.2; /tmp script over the three mask modes); the tolerance leaves
# room for another BLAS summing in another order.
ATOL, RTOL = 1e-5, 1e-4


def net(module: nn.Module, shape: tuple[int, ...] = (IN,)) -> Network:
    torch.manual_seed(0)
    for p in module.parameters():  # fresh values, so models built alike have equal weights
        nn.init.normal_(p, std=0.5)
    return Network(module, torch.zeros(1, *shape)).eval()


def data(n: int = 11, shape: tuple[int, ...] = (IN,)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, OUT, (n,), generator=gen)


def grads_of(model, x, y, mask=None, batch_size=4) -> torch.Tensor:
    return torch.cat([g for _, g in per_sample_grads(model, x, y, mask, batch_size=batch_size)])


def vmap_grads(model, x, y, mask=None, monkeypatch=None) -> torch.Tensor:
    """The general path on the same model: the fast path switched off."""
    monkeypatch.setattr(grads, "linear_layout", lambda m: None)
    try:
        return grads_of(model, x, y, mask)
    finally:
        monkeypatch.undo()


def sequential() -> nn.Sequential:
    return nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Dropout(0.3), nn.Linear(HID, HID),
                         nn.Tanh(), nn.Dropout(0.3), nn.Linear(HID, OUT))


@pytest.mark.parametrize("mask", [None, FIXED, PER_SAMPLE], ids=["none", "fixed", "per-sample"])
def test_a_users_sequential_takes_the_fast_path_with_vmaps_numbers(mask, monkeypatch):
    model = net(sequential())
    assert linear_layout(model) is not None
    x, y = data()
    got = grads_of(model, x, y, mask)
    assert got.shape == (x.shape[0], n_params(model))
    torch.testing.assert_close(got, vmap_grads(model, x, y, mask, monkeypatch),
                               atol=ATOL, rtol=RTOL)


def test_the_builtin_mlp_and_a_flattening_stack_are_found(toy_model):
    assert linear_layout(toy_model) is not None
    stack = linear_stack(toy_model.module)
    assert stack.input_layer is stack.layers[0] is toy_model.module.hidden[0]
    flat = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3, OUT))
    assert linear_stack(flat) is not None and linear_stack(flat).input_layer is None


class BatchCentered(nn.Module):
    """Subtracts the batch mean between its layers: rows depend on each other."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(IN, HID), nn.Linear(HID, OUT)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h - h.mean(0, keepdim=True))


class TiedHead(nn.Module):
    """Reads a layer's weight outside its call (a tied output projection)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(IN, HID)

    def forward(self, x):
        return torch.relu(self.a(x)) @ self.a.weight[:, :OUT]


class Twice(nn.Module):
    """One layer applied twice: its gradient is a sum of two outer products."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(IN, IN), nn.Linear(IN, OUT)

    def forward(self, x):
        return self.b(torch.relu(self.a(torch.relu(self.a(x)))))


class InPlace(nn.Module):
    """ReLU(inplace=True) overwrites the layer output the fast path keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(IN, HID), nn.Linear(HID, OUT)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


class InPlaceFunction(InPlace):
    def forward(self, x):
        return self.b(torch.nn.functional.relu(self.a(x), inplace=True))


@pytest.mark.parametrize("module", [BatchCentered, TiedHead, Twice, InPlace, InPlaceFunction])
def test_models_the_fast_path_would_get_wrong_take_vmap(module):
    model = net(module())
    assert linear_layout(model) is None
    x, y = data()
    # vmap differentiates each sample alone: the same rows whatever the batch
    torch.testing.assert_close(grads_of(model, x, y, batch_size=x.shape[0]),
                               grads_of(model, x, y, batch_size=1), atol=ATOL, rtol=RTOL)


def test_a_stack_over_sequences_falls_back_when_it_runs(monkeypatch):
    # (batch, positions, features): the structure is a stack, the inputs are not rows
    model = net(nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, 1),
                              nn.Flatten()), shape=(OUT, IN))
    assert linear_layout(model) is not None
    x, y = data(shape=(OUT, IN))
    torch.testing.assert_close(grads_of(model, x, y), vmap_grads(model, x, y, None, monkeypatch),
                               atol=ATOL, rtol=RTOL)


class MaybeCentered(nn.Module):
    """Two layers; subtracts the batch mean between them when ``center`` is set."""

    def __init__(self, center: bool) -> None:
        super().__init__()
        self.center = center
        self.a, self.b = nn.Linear(IN, HID), nn.Linear(HID, OUT)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h - h.mean(0, keepdim=True) if self.center else h)


def test_what_tracing_found_is_reused_only_for_the_same_structure():
    # members are fresh instances of one structure, traced once; an attribute the forward
    # branches on is part of the structure
    for center in (False, True, False):
        assert (linear_stack(MaybeCentered(center)) is None) == center
    one, other = MaybeCentered(False), MaybeCentered(False)
    assert linear_stack(other).layers == (other.a, other.b)  # its own layers, not one's
    assert linear_stack(one).input_layer is one.a


def test_a_tasks_network_takes_the_fast_path_unless_the_task_has_its_own_forward(toy_task):
    assert linear_layout(toy_task.network(toy_task.build_model()).eval()) is not None

    class Tempered(type(toy_task)):
        def forward(self, model, x):
            return model(x) / 2

    assert linear_layout(Tempered().network(toy_task.build_model()).eval()) is None


def test_frozen_layers_or_a_custom_forward_take_vmap():
    model = net(sequential())
    model.module[0].weight.requires_grad_(False)
    assert linear_layout(model) is None
    custom = Network(sequential(), torch.zeros(1, IN), forward=lambda m, x: m(x) * 2).eval()
    assert linear_layout(custom) is None


def test_the_zero_input_path_serves_a_users_sequential(monkeypatch):
    model = net(sequential())
    x, y = data(40)
    x = x * (torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.2)
    proj = GaussianProjector(n_params(model), 4, seed=3)
    sparse = SparseInputProjection.build(model, proj, x, batch_size=8)
    assert sparse is not None
    ref = vmap_grads(model, x, y, FIXED, monkeypatch).double() @ proj.matrix().double()
    got = sparse.features(model, x, y, FIXED, "train", batch_size=8)
    assert float((got.double() - ref).abs().max() / ref.abs().max()) < 1e-5
    # something row-wise before the first layer: the sums need the input itself
    first_relu = net(nn.Sequential(nn.ReLU(), *sequential()))
    assert SparseInputProjection.build(first_relu, proj, x, batch_size=8) is None
