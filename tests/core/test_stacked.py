"""Stacked training: each model of a pack equals the model trained alone (raytda's ``fit``)
for the same seeds, init, data order and dropout stream.

Tolerance: none. Measured with these tests' settings (toy-mlp with dropout 0.1, SGD and
Adam, 20 epochs; LDS on 6 subsets; toy-gpt LoRA adapters with Adam), on MNIST-MLP (2
models, 6 epochs; 50 LDS models, 20 epochs, benchmarks/bench_training.py) and on toy-gpt,
every stacked weight, and so every test margin and the LDS, is bit-identical to the
model trained alone on this CPU. That is by construction: each model's linear layers run
as its own ``addmm`` and its loss as its own call (raytda.core.stacked), and every other
op is elementwise or reduces each model's slice in the same order. Before that, with
vmap's own rules, the differences were 3e-7 here and 5e-2 on MNIST after 20 epochs, so
an exact comparison is what catches a regression (and a wrong dropout mask or data
order shows up at 1e-2 or more).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from raytda.core.lds import lds, lds_subsets
from raytda.core.lora import train_adapter, train_adapters_stacked
from raytda.core.outputs import margin
from raytda.core.stacked import (
    Member,
    NotStackable,
    StackedTrainer,
    bytes_per_model,
    check_stackable,
    models_per_pack,
    train_stacked,
)
from raytda.core.train import fit, load_state, seeded_init, train_model
from raytda.data.samples import TensorSamples
from raytda.specs import LDSSpec, Recipe
from raytda.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def alone(build, recipe, x, y, mb: Member) -> dict[int, dict[str, torch.Tensor]]:
    """Member ``mb`` trained by itself, as the LDS and ensemble jobs train it."""
    seeded_init(mb.seed)
    model = build()
    states, _ = fit(model, recipe, (x[mb.rows], y[mb.rows]), mb.seed)
    return states


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def members(n: int, size: int, count: int, seed: int = 0) -> list[Member]:
    rng = np.random.default_rng(seed)
    return [Member(np.sort(rng.choice(n, size, replace=False)), 100 + i) for i in range(count)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stacked_models_equal_models_trained_alone(toy_task, toy_data, optimizer):
    recipe = Recipe(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01,
                    batch_size=16, epochs=20, checkpoint_epochs=(5,))
    x, y = toy_data.x_train, toy_data.y_train
    pack = members(len(y), 30, 4)
    result = train_stacked(toy_task.build_model, recipe, (x, y), pack)
    assert len(result.states) == len(pack)
    for mb, stacked in zip(pack, result.states):
        own = alone(toy_task.build_model, recipe, x, y, mb)
        assert sorted(stacked) == sorted(own) == [5, 20]  # every saved epoch, per model
        for epoch in own:
            assert same(own[epoch], stacked[epoch])
    # The pack's members are different models, far apart compared with the tolerance.
    assert max_diff(result.states[0][20], result.states[1][20]) > 1e-3


def test_each_member_keeps_its_own_dropout_stream(toy_task, toy_data):
    """A pack of two with the same rows and init but different seeds: each still equals
    its own alone run, so neither borrowed the other's masks or order."""
    recipe = Recipe(lr=0.05, batch_size=16, epochs=3)
    x, y = toy_data.x_train, toy_data.y_train
    rows = np.arange(32)
    pack = [Member(rows, 1), Member(rows, 2)]
    seeded_init(0)
    init = {n: p.detach().clone() for n, p in toy_task.build_model().named_parameters()}
    result = StackedTrainer(toy_task.build_model(), [init, init], recipe).fit((x, y), pack)
    for mb, stacked in zip(pack, result.states):
        model = toy_task.build_model()
        model.load_state_dict(init)
        own, _ = fit(model, recipe, (x[rows], y[rows]), mb.seed)
        assert same(own[3], stacked[3])
    assert max_diff(result.states[0][3], result.states[1][3]) > 1e-3


def test_lds_from_stacked_models_equals_lds_from_models_trained_alone(toy_task, toy_data):
    spec = LDSSpec(m=6, alpha=0.5, seed=3)
    x, y = toy_data.x_train, toy_data.y_train
    subsets = lds_subsets(len(y), spec)
    pack = [Member(np.flatnonzero(s), 7 + j) for j, s in enumerate(subsets)]
    recipe = toy_task.recipe
    stacked = train_stacked(toy_task.build_model, recipe, (x, y), pack).states

    def margins(state):
        model = load_state(toy_task.build_model(), state)
        with torch.no_grad():
            return margin(model(toy_data.x_test), toy_data.y_test).numpy()

    truth_alone = np.stack([margins(alone(toy_task.build_model, recipe, x, y, mb)[recipe.epochs])
                            for mb in pack])
    truth_stacked = np.stack([margins(st[recipe.epochs]) for st in stacked])
    assert np.array_equal(truth_alone, truth_stacked)
    # Any fixed scores: the LDS reads only the truth, which is the same.
    scores = np.random.default_rng(0).normal(size=(len(toy_data.y_test), len(y)))
    a, b = lds(scores, subsets, truth_alone), lds(scores, subsets, truth_stacked)
    assert a.mean == b.mean


def test_lora_pack_equals_adapters_trained_alone():
    task = get_task("toy-gpt")
    (x, y), _ = task.load()
    # Short runs: equality, not model quality, is under test.
    base_recipe = Recipe(**{**task.recipe.to_dict(), "epochs": 2, "checkpoint_epochs": ()})
    recipe = Recipe(**{**task.lora_spec.adapter_recipe(task.recipe).to_dict(), "epochs": 4,
                       "checkpoint_epochs": ()})
    base = train_model(task.build_model, base_recipe, x, y, seed=0).final
    samples = TensorSamples(x, y)
    pack = members(len(y), len(y) // 2, 3, seed=1)
    stacked = train_adapters_stacked(load_state(task.build_model(), base).train(),
                                     task.lora_spec, recipe, samples, pack,
                                     loss_fn=task.loss, forward=task.forward)
    for mb, got in zip(pack, stacked):
        own = train_adapter(load_state(task.build_model(), base).train(), task.lora_spec,
                            recipe, samples.subset(mb.rows), mb.seed, loss_fn=task.loss,
                            forward=task.forward)
        assert own.n_params == got.n_params
        assert same(own.state, got.state)
    # Each adapter is billed its share of the pack's one loop.
    assert len({a.train_time_s for a in stacked}) == 1


def test_members_with_unequal_row_counts_are_refused(toy_task, toy_data):
    recipe = Recipe(epochs=1, batch_size=16)
    pack = [Member(np.arange(30), 0), Member(np.arange(31), 1)]
    with pytest.raises(NotStackable, match="rows"):
        train_stacked(toy_task.build_model, recipe, (toy_data.x_train, toy_data.y_train), pack)


def test_modules_training_cannot_reproduce_stacked_are_refused():
    with pytest.raises(NotStackable, match="BatchNorm"):
        check_stackable(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    with pytest.raises(NotStackable, match="Dropout2d"):
        check_stackable(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout2d(0.1)))


class RoundsOtherwiseUnderVmap(nn.Module):
    """A model whose arithmetic under vmap differs from its own in the last bits, as some
    layer norms' does at some widths, but on every torch version: it adds an offset of
    one float32 ulp of 1.0 only when its activations are vmap's batched tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        if torch._C._functorch.is_batchedtensor(h):
            h = h + 2.0 ** -23
        return self.out(h)


def test_a_model_whose_stacked_arithmetic_differs_is_refused_before_training():
    """Packing must never change a number: the first batch's losses and gradients are
    compared bit for bit with the model's own, so such a model trains alone instead."""
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    pack = [Member(np.arange(20), s) for s in range(3)]
    with pytest.raises(NotStackable, match="not bit-identical"):
        train_stacked(RoundsOtherwiseUnderVmap, Recipe(epochs=1, batch_size=16), (x, y), pack)


@pytest.mark.parametrize("n", [32, 36])  # the last batch full, and one of 4 rows
def test_the_exactness_check_passes_models_that_stack_exactly(n):
    """The same model without its vmap-only offset packs (both batch sizes checked)."""
    x, y = torch.randn(n, 5), torch.randint(0, 3, (n,))

    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    pack = [Member(np.arange(n), s) for s in range(3)]
    recipe = Recipe(epochs=2, batch_size=16, checkpoint_epochs=())
    stacked = train_stacked(build, recipe, (x, y), pack).states
    for mb, states in zip(pack, stacked):
        assert same(alone(build, recipe, x, y, mb)[2], states[2])


def test_pack_size_follows_the_memory_budget(toy_task, toy_data):
    model = toy_task.build_model()
    x1, y1 = toy_data.x_train[:1], toy_data.y_train[:1]
    sgd = bytes_per_model(model, Recipe(batch_size=16), x1, y_example=y1)
    adam = bytes_per_model(model, Recipe(optimizer="adam", batch_size=16), x1, y_example=y1)
    big_batch = bytes_per_model(model, Recipe(batch_size=256), x1, y_example=y1)
    params = sum(p.numel() * 4 for p in model.parameters())
    assert adam - sgd == params  # Adam keeps one more state tensor per parameter
    assert big_batch > sgd  # activations grow with the batch
    assert models_per_pack(sgd, 10 * sgd) == 10
    assert models_per_pack(sgd, 10 * sgd, limit=4) == 4
    assert models_per_pack(sgd, sgd // 2) == 1  # one that does not fit trains alone


def test_template_is_not_shared_with_the_caller(toy_task, toy_data):
    """The trainer copies initial weights in: the caller's tensors are left as they were."""
    seeded_init(0)
    init = {n: p.detach().clone() for n, p in toy_task.build_model().named_parameters()}
    before = copy.deepcopy(init)
    StackedTrainer(toy_task.build_model(), [init], Recipe(epochs=1, batch_size=16)).fit(
        (toy_data.x_train, toy_data.y_train), [Member(np.arange(20), 0)])
    assert max_diff(before, init) == 0.0
