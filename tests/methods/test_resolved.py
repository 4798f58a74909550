"""Method.resolved: proj_dim and features chosen per Task before keys, explicit values
kept, the paper's settings at k = 2048 dense, and the choice stated in the results."""

from __future__ import annotations

import pytest
import torch

from raytda import Sweep, Task
from raytda.ensembles import Ensemble
from raytda.features.choice import FEATURES_RULE
from raytda.methods import Method
from raytda.methods.k_rule import PROJ_DIM_RULE, RIDGE_RULE
from raytda.plan.evaluate import Evaluate
from raytda.results import format_table
from raytda.tasks import get_task

PAPER = ("mnist-mlp", "cifar2-mlp", "cifar2-resnet9", "maestro-mt", "shakespeare-gpt")
#: fingerprints given by hand, so keys are made without reading any data file
IDENT = {"train": {"rows": 1000, "digest": "a"}, "test": {"rows": 10, "digest": "b"}}


class TinyGPT2Task(Task):
    """A GPT-2-shaped model (transformers' GPT2LMHeadModel from a config) just above the
    features threshold; 32 sequences of 16 tokens."""

    name = "tiny-gpt2"

    def build_model(self):
        import transformers

        cfg = transformers.GPT2Config(vocab_size=1024, n_layer=2, n_embd=64, n_head=2,
                                      n_positions=16, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg)

    def train_data(self):
        seq = torch.randint(0, 1024, (32, 17), generator=torch.Generator().manual_seed(0))
        return seq[:, :-1], seq[:, 1:]

    def test_data(self):
        x, y = self.train_data()
        return x[:4], y[:4]


def test_a_small_mlp_resolves_to_dense_and_the_rules_k_saying_why():
    task = get_task("digits-mlp")  # 17,226 parameters, n = 1000
    m = Method("trak").resolved(task)
    assert m.features == "dense" and m.proj_dim == PROJ_DIM_RULE.choose(1000)
    assert m.ridge_scale == RIDGE_RULE.choose()
    assert m.chosen == ("features=dense (rule: 17,226 params)",
                        f"proj_dim={m.proj_dim} (rule: n=1000)",
                        f"ridge_scale={m.ridge_scale:g} (rule)")
    assert m.label == "trak"  # values chosen per Task are columns, not part of the name


def test_a_gpt2_shaped_model_above_the_threshold_resolves_to_hook_features():
    pytest.importorskip("transformers")
    task = TinyGPT2Task()
    m = Method("trak").resolved(task)
    n_params = sum(p.numel() for p in task.build_model().parameters())
    assert n_params > FEATURES_RULE.max_dense_params
    assert m.features_part.name == FEATURES_RULE.choose(n_params) != "dense"
    assert f"features={m.features} (rule: {n_params:,} params)" in m.chosen
    # the same model below a higher threshold: dense (the threshold is the rule's parameter)
    from raytda.features.choice import FeaturesRule

    assert FeaturesRule(max_dense_params=n_params).choose(n_params) == "dense"
    # IF needs exact gradients: dense whatever the size
    assert Method("if").resolved(task).features == "dense"


def test_explicit_values_win_and_are_not_marked_chosen():
    task = get_task("digits-mlp")
    m = Method("trak", proj_dim=512, features="factorized", ridge_scale=0.5)
    assert m.resolved(task) is m and m.chosen == ()
    # an absolute ridge leaves no scale to choose, and nothing is marked
    fixed = Method("trak", proj_dim=512, features="dense", ridge=1e-3).resolved(task)
    assert fixed.ridge_scale is None and fixed.chosen == () and fixed.is_resolved
    half = Method("trak", proj_dim=512).resolved(task)  # k given, features chosen
    assert half.proj_dim == 512 and [c.partition("=")[0] for c in half.chosen] == \
        ["features", "ridge_scale"]
    sweep = Sweep("digits-mlp", ["trak"], ["naive:I=1"], proj_dim=256, store="/unused",
                  progress=False)
    sweep.spec.tasks[0].set_data_identity(IDENT)
    assert sweep.spec.evaluations()[0].method.proj_dim == 256


@pytest.mark.parametrize("name", PAPER)
def test_paper_settings_keep_k_2048_dense_and_todays_keys(name):
    task = get_task(name)
    task.set_data_identity(IDENT)
    default = Evaluate(task, Method("trak"), Ensemble("dropout", 1, 2), None)
    explicit = Evaluate(task, Method("trak", proj_dim=2048), Ensemble("dropout", 1, 2), None)
    assert (default.method.proj_dim, default.method.features) == (2048, "dense")
    assert default.method.ridge_scale == 0.0  # TRAK's own ridge, as the paper
    assert default.key == explicit.key
    assert [b.key for b in default.blocks()] == [b.key for b in explicit.blocks()]


def test_keys_of_explicit_specs_are_unchanged():
    # Literals from raytda before issue 28 (Method() was TRAK, k = 2048, dense, TRAK's
    # own ridge), for toy-mlp with its real data fingerprints: stores made then are
    # still read. ridge_scale 0 (and an absolute ridge) add nothing to keys.
    task = get_task("toy-mlp")
    ev = Evaluate(task, Method("trak", proj_dim=2048, ridge_scale=0.0), Ensemble("naive", 1),
                  None)
    assert ev.key == "result-b4167820ac7b53a073f1"
    assert ev.blocks()[0].key == "block-8ad41c5f03e25d3b80aa"
    dense = Evaluate(task, Method("trak", proj_dim=2048, features="dense", ridge_scale=0.0),
                     Ensemble("naive", 1), None)
    assert dense.key == ev.key  # a resolved or explicit "dense" adds nothing to keys
    # the rule's ridge is another computation: another key, for the result and members
    ruled = Evaluate(task, Method("trak", proj_dim=2048), Ensemble("naive", 1), None)
    assert ruled.method.ridge_scale == RIDGE_RULE.choose()
    assert ruled.key != ev.key and ruled.blocks()[0].key != ev.blocks()[0].key
    stated = Evaluate(task, Method("trak", proj_dim=2048, ridge_scale=RIDGE_RULE.choose()),
                      Ensemble("naive", 1), None)
    assert stated.key == ruled.key  # chosen or given, the same artifact


def test_the_results_say_which_k_and_features_and_why(tmp_path):
    df = Sweep("toy-mlp", ["trak"], ["naive:I=1"], lds=None, store=str(tmp_path / "s"),
               progress=False).run()
    row = df.iloc[0]
    assert row["features"] == "dense" and row["proj_dim"] == PROJ_DIM_RULE.choose(60)
    assert "proj_dim=256 (rule: n=60)" in row["chosen"]
    assert row["ridge_scale"] == RIDGE_RULE.choose() and "ridge_scale=3 (rule)" in row["chosen"]
    assert 0 < row["ridge_max"]  # the member solved with the rule's ridge
    text = format_table(df)
    assert "256 (rule: n=60)" in text and "dense (rule: 467 params)" in text
    assert "3 (rule)" in text
