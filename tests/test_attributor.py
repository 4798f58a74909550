"""The Attributor: new inputs scored from a finished ensemble's stored train side."""

from __future__ import annotations

import hashlib

import pytest
import torch

from raytda import Sweep
from raytda.attributor import Attributor
from raytda.data.synthetic import load_synthetic
from raytda.ensembles import Ensemble
from raytda.features.dense import DenseFeaturizer
from raytda.methods import Method
from raytda.specs import SpecError
from raytda.tasks import get_task
from raytda.tasks.mlp import ToyMLPTask

METHOD = Method("trak", proj_dim=16)
ENSEMBLES = (Ensemble("naive", 2), Ensemble("dropout", 1, 3),
             Ensemble("dropout", 1, 3, mask_mode="per-sample"))


class HeldOutTask(ToyMLPTask):
    """The toy task with another test set: same train side (``train_key``), so a sweep of
    it reuses the models and Q of the built-in toy task's sweep."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y = x, y

    def test_data(self):
        return self.x, self.y

    def test_config(self):
        h = hashlib.sha256(self.x.numpy().tobytes() + self.y.numpy().tobytes())
        return {"held_out": h.hexdigest()[:16]}

    def __reduce__(self):
        return (HeldOutTask, (self.x, self.y))


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_torch_thread):
    store = tmp_path_factory.mktemp("store")
    sweep = Sweep(get_task("toy-mlp"), METHOD, ENSEMBLES, lds=None, store=str(store),
                  progress=False)
    sweep.run()
    return sweep


@pytest.fixture(scope="module")
def held_out():
    """Toy inputs from the same distribution that are not in the toy test set."""
    s = get_task("toy-mlp").settings
    more = load_synthetic(s["n_train"], s["n_test"] + 8, s["seed"])
    x, y = more.x_test[s["n_test"]:], more.y_test[s["n_test"]:]
    test_x = load_synthetic(s["n_train"], s["n_test"], s["seed"]).x_test
    assert not any(torch.equal(r, t) for r in x for t in test_x)
    return x, y


@pytest.mark.parametrize("ens", ENSEMBLES, ids=lambda e: e.label)
def test_scores_of_the_test_inputs_equal_the_sweeps(finished, ens):
    attr = Attributor.from_sweep(finished, ens)
    x, y = finished.spec.tasks[0].data().test.tensors()
    ref = finished.scores(ens)
    got = attr.scores(x, y)
    assert got.shape == ref.shape == (len(x), attr.n_train)
    assert rel_diff(got, ref) < 1e-5
    # rows given on their own, at their place in the test split (per-sample masks too)
    assert rel_diff(attr.scores(x[5:9], y[5:9], start=5), ref[5:9]) < 1e-5


def test_per_sample_masks_follow_the_row_number(finished):
    ens = ENSEMBLES[2]
    attr = Attributor.from_sweep(finished, ens)
    x, y = finished.spec.tasks[0].data().test.tensors()
    ref = finished.scores(ens)
    # row 5 scored as if it were row 0: other masks, other scores
    assert rel_diff(attr.scores(x[5:6], y[5:6], start=0), ref[5:6]) > 1e-3


def test_new_inputs_score_as_if_they_were_in_a_test_set(finished, held_out):
    x, y = held_out
    attrs = {ens: Attributor.from_sweep(finished, ens) for ens in ENSEMBLES}
    new = {ens: a.scores(x, y) for ens, a in attrs.items()}
    assert all(torch.isfinite(s).all() for s in new.values())

    second = Sweep(HeldOutTask(x, y), METHOD, ENSEMBLES, lds=None,
                   store=str(finished.store.uri), progress=False)
    kinds = {j.kind for j in second.plan().todo}
    assert "model" not in kinds and "q" not in kinds  # the train side is reused
    assert "block" in kinds
    second.run()
    for ens in ENSEMBLES:
        assert rel_diff(new[ens], second.scores(ens)) < 1e-5


def test_the_train_side_is_not_recomputed(finished, held_out, monkeypatch):
    x, y = held_out
    ens = ENSEMBLES[1]
    before = sorted(finished.store.keys())
    seen: list[tuple[str, int]] = []
    real = DenseFeaturizer.batches

    def counting(self, samples, mask, split, offset=0):
        seen.append((split, samples.n))
        return real(self, samples, mask, split, offset)

    monkeypatch.setattr(DenseFeaturizer, "batches", counting)
    attr = Attributor.from_sweep(finished, ens)
    assert seen == []  # construction loads the train side, it computes none of it
    top = attr.top_k(x, y, k=4)
    assert seen == [("test", len(x))] * attr.n_members
    assert sorted(finished.store.keys()) == before  # nothing new written
    s = attr.scores(x, y)
    assert torch.equal(top.proponent_scores, s.topk(4, dim=1).values)
    assert torch.equal(top.opponents, s.topk(4, dim=1, largest=False).indices)
    assert (top.proponent_scores[:, 0] >= top.opponent_scores[:, 0]).all()


def test_memory_budget_changes_what_is_resident_not_the_scores(finished, held_out):
    x, y = held_out
    ens = ENSEMBLES[1]
    full = Attributor.from_sweep(finished, ens)
    assert full.resident_members == full.n_members
    mem = full.memory()
    assert mem["projections"] > 0 and mem["total"] == full.resident_bytes
    one = full.members[0].featurizer.prepared_bytes
    tight = Attributor.from_sweep(finished, ens, memory_bytes=one)
    assert tight.resident_members == 1
    assert torch.equal(tight.scores(x, y), full.scores(x, y))
    assert tight.resident_members == 1
    assert tight.memory()["projections"] < mem["projections"]


def test_methods_without_a_stored_train_side_are_refused(tmp_path):
    sweep = Sweep("toy-mlp", Method("grad-cos"), [Ensemble("naive", 1)], lds=None,
                  store=str(tmp_path), progress=False)
    with pytest.raises(SpecError, match="grad-cos.*train gradients"):
        Attributor.from_sweep(sweep, Ensemble("naive", 1))


def test_a_configuration_that_has_not_run_is_refused(tmp_path):
    sweep = Sweep("toy-mlp", METHOD, [Ensemble("naive", 1)], lds=None, store=str(tmp_path),
                  progress=False)
    with pytest.raises(SpecError, match="has not run"):
        Attributor.from_sweep(sweep, Ensemble("naive", 1))


# ------------------------------------------------------------------ every built-in kind

EVERY_KIND = ("naive:I=2", "dropout:I=1,D=3", "dropout:I=1,D=2,mask_mode=per-sample",
              "dropout-forward:I=1,D=3", "dropout-forward-shared:I=2,D=2",
              "projection-only:I=1,D=2", "checkpoints:I=1,C=2", "checkpoints-dropout:I=1,C=2,D=2")


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory, one_torch_thread):
    store = str(tmp_path_factory.mktemp("kinds"))
    mlp = Sweep(get_task("toy-mlp", checkpoint_epochs=(2,)), METHOD, EVERY_KIND, lds=None,
                store=store, progress=False)
    mlp.run()
    # LoRA members need a model with LoRA targets: the toy GPT has them
    gpt = Sweep("toy-gpt", Method("trak", proj_dim=8), ["lora:I=1,L=2"],
                lds=None, store=store, progress=False)
    gpt.run()
    return {e: mlp for e in EVERY_KIND} | {"lora:I=1,L=2": gpt}


def test_every_builtin_kind_is_covered(every_kind):
    from raytda.ensembles import ENSEMBLES, as_ensemble

    assert {as_ensemble(e).kind for e in every_kind} == set(ENSEMBLES)


@pytest.mark.parametrize("ens", [*EVERY_KIND, "lora:I=1,L=2"])
def test_the_attributor_equals_the_batch_path_for_every_kind(every_kind, ens):
    sweep = every_kind[ens]
    attr = Attributor.from_sweep(sweep, ens)
    x, y = sweep.spec.tasks[0].data().test.tensors()
    # measured: at most 4e-7 over these kinds (float64 solve vs per-call solve rounding)
    assert rel_diff(attr.scores(x, y), sweep.scores(ens)) < 1e-5


# ------------------------------------------------------------------ token rows


@pytest.fixture(scope="module")
def token_attributor(token_sweep):
    return Attributor.from_sweep(token_sweep, token_sweep.spec.evaluations()[0].ensemble)


def test_token_rows_score_as_the_task_batches_them(token_sweep, token_attributor,
                                                   make_token_rows):
    stored = token_sweep.scores(token_sweep.spec.evaluations()[0].ensemble)
    rows = make_token_rows(4, seed=1)  # the task's test rows, as a tokenizer gives them
    assert torch.equal(token_attributor.scores(rows), stored)  # same padding, same numbers
    x, y = token_sweep.spec.tasks[0].data().test.take(torch.arange(4))
    assert torch.equal(token_attributor.scores(x, y), stored)  # the padded Batch path
    no_masks = [{"input_ids": r["input_ids"]} for r in rows]
    assert torch.equal(token_attributor.scores(no_masks), stored)
    columns = {"input_ids": [r["input_ids"] for r in rows]}
    assert torch.equal(token_attributor.top_k(columns, k=3).proponents,
                       stored.topk(3, dim=1).indices)


def test_token_rows_mistakes_are_one_line(token_attributor, make_token_rows, finished):
    rows = make_token_rows(2, seed=5)
    with pytest.raises(SpecError, match="^input row 2: token id 99 is outside the vocabulary"):
        token_attributor.scores(rows + [{"input_ids": [1, 99]}])
    with pytest.raises(SpecError, match="call scores\\(rows\\) without y"):
        token_attributor.scores(rows, torch.zeros(2, dtype=torch.long))
    with pytest.raises(SpecError, match="give targets y with tensor inputs"):
        token_attributor.scores(torch.zeros(2, 3, dtype=torch.long))
    toy = Attributor.from_sweep(finished, ENSEMBLES[0])
    with pytest.raises(SpecError, match="takes tensor inputs, not rows of token dicts"):
        toy.scores(rows)
