"""Deterministic training and safetensors checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytda.core.checkpoint import (
    CheckpointError,
    from_bytes,
    load_checkpoint,
    save_checkpoint,
    to_bytes,
)
from raytda.core.train import half_subset, load_weights, train_model
from raytda.specs import Recipe
from raytda.tasks import get_task

# Few epochs: these tests check bookkeeping and determinism, not model quality.
RECIPE = Recipe(lr=0.05, batch_size=16, epochs=4, checkpoint_epochs=(1, 2))


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(toy_task, toy_data):
    return train_model(toy_task.build_model, RECIPE, toy_data.x_train, toy_data.y_train, seed=0)


def test_training_is_deterministic(toy_task, toy_data, trained):
    torch.manual_seed(12345)  # global RNG state must not leak into the result
    torch.rand(7)
    again = train_model(toy_task.build_model, RECIPE, toy_data.x_train, toy_data.y_train, seed=0)
    for epoch in RECIPE.saved_epochs:
        assert states_equal(trained.states[epoch], again.states[epoch])


def test_different_seeds_give_different_models(toy_task, toy_data, trained):
    other = train_model(toy_task.build_model, RECIPE, toy_data.x_train, toy_data.y_train, seed=1)
    assert not states_equal(trained.final, other.final)


def test_keeps_every_saved_epoch_and_they_differ(trained):
    assert sorted(trained.states) == [1, 2, 4]
    assert trained.final_epoch == 4 and trained.final is trained.states[4]
    assert not states_equal(trained.states[1], trained.states[4])
    assert trained.train_time_s > 0


def test_training_reduces_loss(toy_task, toy_data, trained):
    loss = torch.nn.functional.cross_entropy
    x, y = toy_data.x_train, toy_data.y_train
    with torch.no_grad():
        first = loss(load_weights(toy_task.build_model(), trained.states[1], x[:1])(x), y)
        last = loss(load_weights(toy_task.build_model(), trained.final, x[:1])(x), y)
    assert last < first


def test_saved_states_are_snapshots_not_live_views(toy_task, toy_data, trained):
    """Epoch-1 weights must not be aliased to tensors that later training mutates."""
    for k in trained.states[1]:
        assert trained.states[1][k].data_ptr() != trained.final[k].data_ptr()


def test_checkpoint_round_trip(tmp_path, trained, toy_task, toy_data):
    path = tmp_path / "sub" / "model.safetensors"
    save_checkpoint(path, trained.final)
    loaded = load_checkpoint(path)
    assert states_equal(loaded, trained.final)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp
    # It is a plain safetensors file, readable without raytda.
    from safetensors.torch import load_file
    assert states_equal(load_file(path), trained.final)
    # The reloaded model computes exactly what the trained weights compute.
    x1 = toy_data.x_train[:1]
    a = load_weights(toy_task.build_model(), loaded, x1)
    b = load_weights(toy_task.build_model(), trained.final, x1)
    assert not a.training
    with torch.no_grad():
        assert torch.equal(a(toy_data.x_test), b(toy_data.x_test))


def test_checkpoint_overwrite_replaces_content(tmp_path, trained):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, trained.states[1])
    save_checkpoint(path, trained.final)
    assert states_equal(load_checkpoint(path), trained.final)


def test_bytes_round_trip_and_corrupt_bytes(trained):
    blob = to_bytes(trained.final)
    assert states_equal(from_bytes(blob), trained.final)
    with pytest.raises(CheckpointError, match="not a valid safetensors checkpoint"):
        from_bytes(blob[: len(blob) // 2])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_checkpoint_that_does_not_fit_the_model(toy_task, toy_data, trained):
    x1 = toy_data.x_train[:1]
    wider = get_task("toy-mlp", hidden=(16, 32))
    with pytest.raises(CheckpointError, match="does not fit model") as err:
        load_weights(wider.build_model(), trained.final, x1)
    msg = str(err.value)
    assert "hidden.1.weight" in msg and "(16, 16)" in msg and "(32, 16)" in msg
    deeper = get_task("toy-mlp", hidden=(16, 16, 16))
    with pytest.raises(CheckpointError, match=r"missing \['hidden.2.bias', 'hidden.2.weight'\]"):
        load_weights(deeper.build_model(), trained.final, x1)
    extra = dict(trained.final, stray=torch.zeros(1))
    with pytest.raises(CheckpointError, match=r"unexpected \['stray'\]"):
        load_weights(toy_task.build_model(), extra, x1)


def test_half_subset():
    s = half_subset(101, seed=3)
    assert len(s) == 50 and len(np.unique(s)) == 50
    assert np.all(np.diff(s) > 0) and s.min() >= 0 and s.max() < 101
    assert np.array_equal(s, half_subset(101, seed=3))
    assert not np.array_equal(s, half_subset(101, seed=4))
