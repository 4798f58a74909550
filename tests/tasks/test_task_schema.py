"""The one schema of the built-in Tasks: settings dicts, overrides, keys and validation."""

from __future__ import annotations

import pickle

import pytest

from raytda.specs import SpecError
from raytda.tasks import TASKS, as_task, get_task, task_class
from raytda.tasks.builtin import RECIPE_KEYS, BuiltinTask, even_epochs


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_builtin_declares_both_scales_with_one_schema(name):
    cls = task_class(name)
    assert issubclass(cls, BuiltinTask) and cls.name == name
    assert set(cls.CPU) == set(cls.FULL)  # full=True changes values, never which keys
    for full in (False, True):
        task = get_task(name, full=full)
        r = task.recipe
        assert r.checkpoint_epochs == even_epochs(r.epochs) and r.epochs in r.saved_epochs
        assert not set(task.config()) & set(RECIPE_KEYS)  # keyed once, through the recipe
    # a scale that is the same as the other is the same task: same key, same models
    if cls.FULL == cls.CPU:
        assert get_task(name, full=True).declared_key == get_task(name).declared_key
    else:
        assert get_task(name, full=True).declared_key != get_task(name).declared_key


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_paper_mlps_keep_appendix_b():
    mnist, cifar = get_task("mnist-mlp"), get_task("cifar2-mlp")
    # 784-128-64-10 and 3072-120-84-2 with biases (DESIGN: 0.11M and 0.38M)
    assert n_params(mnist.build_model()) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert n_params(cifar.build_model()) == 3072 * 120 + 120 + 120 * 84 + 84 + 84 * 2 + 2
    for task, epochs in ((mnist, 100), (cifar, 50)):
        r = task.recipe
        assert (r.optimizer, r.lr, r.momentum, r.batch_size, r.epochs) == ("sgd", 0.01, 0.9, 64,
                                                                           epochs)
        assert (task.settings["n_train"], task.settings["n_test"]) == (5000, 500)
        assert task.settings["dropout"] == 0.1 and task.lora is None
    gpt = get_task("shakespeare-gpt")
    assert gpt.dropout_mask_dims == 1 and gpt.lora_spec.targets == ("q_proj", "v_proj")
    assert gpt.output().name == "sequence log-likelihood"


def test_overrides_change_the_key_and_the_location_does_not():
    base = get_task("toy-mlp")
    assert get_task("toy-mlp", data_dir="/somewhere/else").declared_key == base.declared_key
    for over in ({"n_train": 40}, {"seed": 1}, {"lr": 0.1}, {"dropout": 0.2},
                 {"hidden": (8,)}, {"weight_decay": 1e-4}):
        assert get_task("toy-mlp", **over).declared_key != base.declared_key, over


def test_checkpoints_follow_epochs_unless_given():
    t = get_task("toy-mlp", n_train=40, epochs=10, dropout=0.3)
    assert t.settings["n_train"] == 40 and t.settings["dropout"] == 0.3
    assert t.recipe.epochs == 10 and t.recipe.checkpoint_epochs == (2, 4, 6, 8)
    assert get_task("toy-mlp", checkpoint_epochs=(1,)).recipe.checkpoint_epochs == (1,)
    assert task_class("toy-mlp").CPU["n_train"] == 60  # the class's settings are not mutated


def test_unknown_override_is_one_line_listing_the_valid_keys():
    with pytest.raises(SpecError) as err:
        get_task("digits-mlp", bogus=1)
    msg = str(err.value)
    assert "\n" not in msg and "['bogus']" in msg and "'digits-mlp'" in msg
    assert "'normalize'" in msg and "'n_train'" in msg and "'epochs'" in msg
    with pytest.raises(SpecError, match=r"unknown override\(s\) \['normalize'\]"):
        get_task("toy-gpt", normalize=None)  # token data has no pixels to normalize


@pytest.mark.parametrize("over, message", [
    ({"n_train": 1}, "n_train must be an integer >= 2"),
    ({"n_test": 0}, "n_test must be an integer >= 1"),
    ({"dropout": 1.0}, r"dropout rate must be in \[0, 1\)"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"epochs": 5, "checkpoint_epochs": (6,)}, r"checkpoint_epochs must lie in \[1, 5\]"),
])
def test_bad_settings_are_refused(over, message):
    with pytest.raises(SpecError, match=message):
        get_task("toy-mlp", **over)


def test_builtins_pickle_as_their_settings_and_move_to_another_directory():
    t = get_task("mnist-mlp", data_dir="/data/mnist", n_train=300, normalize=None)
    back = pickle.loads(pickle.dumps(t))
    assert type(back) is type(t) and back.settings == t.settings
    assert back.declared_key == t.declared_key and back.data_dir == "/data/mnist"
    moved = as_task(t, data_dir="/elsewhere")
    assert moved.data_dir == "/elsewhere" and moved.declared_key == t.declared_key
    assert moved.settings["n_train"] == 300
    with pytest.raises(SpecError, match="apply to built-in settings only"):
        as_task(t, overrides={"n_train": 10})
