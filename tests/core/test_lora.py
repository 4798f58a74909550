"""LoRA Ensemble: adapters (peft), their gradients, specs, planning and an end-to-end sweep."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
import torch

from raytda import LDSSpec, Sweep
from raytda.core.checkpoint import load_checkpoint, save_checkpoint
from raytda.core.grads import n_trainable, per_sample_grads
from raytda.core.lora import attach_adapter, load_adapted, train_adapter
from raytda.core.network import Network
from raytda.core.outputs import GENERATIVE, sequence_loglik
from raytda.core.train import load_state, load_weights, train_model
from raytda.data import Dataset
from raytda.ensembles import Ensemble, parse_ensemble
from raytda.ensembles.lora import TrainAdapter, TrainBase
from raytda.methods import Method
from raytda.plan.models import TrainModel
from raytda.plan.planner import SweepSpec, make_plan
from raytda.specs import LoRASpec, Member, SpecError
from raytda.tasks import get_task

TASK = get_task("toy-gpt")
SIZES = TASK.settings  # vocab, n_layer, d_model, block_size, ...


def count_adapter_params(model: torch.nn.Module, spec: LoRASpec) -> int:
    """Parameters one adapter adds to ``model``, counted on a deep copy of it."""
    import copy

    peft_model = attach_adapter(copy.deepcopy(model), spec)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


# Toy GPTs are latency-bound: extra intra-op threads only add synchronization.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    (x, y), (xt, yt) = TASK.load()
    return Dataset(x, y, xt, yt)


@pytest.fixture(scope="module")
def base_state(data):
    recipe = TASK.lora_spec.base_recipe(TASK.recipe)
    return train_model(TASK.build_model, recipe, data.x_train, data.y_train, seed=0).final


def base(state):
    return load_state(TASK.build_model(), state)


def adapted(base_state, adapter_state, lora=TASK.lora_spec) -> Network:
    """A LoRA member as the core sees it: one mask per sequence, like every GPT member."""
    module = load_adapted(base(base_state), adapter_state, lora)
    return Network(module, torch.zeros(1, SIZES["block_size"], dtype=torch.long),
                   mask_dims=1).eval()


@pytest.fixture(scope="module")
def adapter(base_state, data):
    lora = TASK.lora_spec
    return train_adapter(base(base_state), lora, lora.adapter_recipe(TASK.recipe),
                         (data.x_train[:20], data.y_train[:20]), seed=1)


def expected_adapter_params(lora: LoRASpec = TASK.lora_spec) -> int:
    # per adapted (d x d) layer: A (r x d), B (d x r), bias (d)
    d = SIZES["d_model"]
    return SIZES["n_layer"] * len(lora.targets) * (2 * lora.r * d + d)


# --------------------------------------------------------------------------- adapters


def test_adapters_only_touch_q_and_v(adapter, base_state, data):
    assert adapter.state and all(".q_proj." in k or ".v_proj." in k for k in adapter.state)
    model = adapted(base_state, adapter.state)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".q_proj." in n or ".v_proj." in n for n in trainable)
    assert {n.split(".")[-2] for n in trainable} >= {"default", "base_layer"}  # A/B and biases
    # Everything outside q/v is the base model, bit for bit...
    frozen = {n.replace(".base_layer", "").removeprefix("module."): p
              for n, p in model.named_parameters() if not p.requires_grad}
    for name, value in base_state.items():
        if ".q_proj." not in name and ".v_proj." not in name:
            assert torch.equal(frozen[name], value), name
        elif name.endswith("weight"):  # the frozen W_q, W_v themselves are untouched too
            assert torch.equal(frozen[name], value), name
    # ...and the adapter changed the model's outputs.
    base_model = load_weights(TASK.build_model(), base_state, data.x_train[:1],
                              TASK.dropout_mask_dims)
    with torch.no_grad():
        assert not torch.allclose(model(data.x_test), base_model(data.x_test))


def test_gradient_dimension_equals_adapter_parameter_count(adapter, base_state, data):
    model = adapted(base_state, adapter.state)
    g = torch.cat([g for _, g in per_sample_grads(model, data.x_train[:4], data.y_train[:4],
                                                   output=GENERATIVE)])
    n = expected_adapter_params()
    assert g.shape == (4, n)
    assert n == adapter.n_params == n_trainable(model) == count_adapter_params(
        base(base_state), TASK.lora_spec)
    assert n < sum(v.numel() for v in base_state.values())


def test_lora_member_gradients_match_brute_force_autograd(adapter, base_state, data):
    model = adapted(base_state, adapter.state)
    x, y = data.x_train[:4], data.y_train[:4]
    g = torch.cat([g for _, g in per_sample_grads(model, x, y, batch_size=3,
                                                   output=GENERATIVE)])
    params = [p for p in model.parameters() if p.requires_grad]
    for b in range(len(x)):
        f = sequence_loglik(model(x[b:b + 1]), y[b:b + 1]).sum()
        ref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(f, params)])
        assert torch.allclose(g[b], ref, atol=1e-5, rtol=1e-4)


def test_adapters_are_deterministic_and_round_trip_as_safetensors(adapter, base_state, data,
                                                                   tmp_path):
    lora = TASK.lora_spec
    again = train_adapter(base(base_state), lora, lora.adapter_recipe(TASK.recipe),
                          (data.x_train[:20], data.y_train[:20]), seed=1)
    assert all(torch.equal(again.state[k], v) for k, v in adapter.state.items())
    save_checkpoint(tmp_path / "adapter.safetensors", adapter.state)
    assert (tmp_path / "adapter.safetensors").read_bytes()[:8]  # safetensors header length
    back = load_checkpoint(tmp_path / "adapter.safetensors")
    a = adapted(base_state, adapter.state, lora)
    b = adapted(base_state, back, lora)
    with torch.no_grad():
        assert torch.equal(a(data.x_test), b(data.x_test))


def test_appendix_e_lora_stored_parameters():
    from raytda.ensembles import Ensemble

    ens = Ensemble("lora", 2, L=3)
    assert ens.kind_class.stored_params(ens, 1000, 50) == 2 * 1000 + 2 * 3 * 50


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("make, message", [
    (lambda: Ensemble("lora", 1), r"ensemble 'lora:I=1' does not set L \(LoRA adapters per "
                                  r"base model\); write e.g. 'lora:I=1,L=3'"),
    (lambda: Ensemble("lora", 1, L=0), r"L \(LoRA adapters per base model\) must be an integer >= 1"),
    (lambda: Ensemble("naive", 1, L=2), "kind 'naive' takes no L"),
    (lambda: Ensemble("lora", 1, D=2, L=1), "takes no D"),
    (lambda: parse_ensemble("lora:I=1,L=x"), "L must be an integer"),
    (lambda: LoRASpec(bias="some"), "unknown LoRA bias option 'some'"),
    (lambda: LoRASpec(r=0), "rank r must be >= 1"),
    (lambda: SweepSpec(tasks=(get_task("toy-mlp"),),
                       ensembles=(Ensemble("lora", 1, L=2),)), "needs a recipe and Task.lora"),
])
def test_lora_spec_errors(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_lora_ensemble_spec_and_members():
    ens = parse_ensemble("lora:I=2,L=3")
    assert ens == Ensemble("lora", 2, L=3) and ens.label == "lora I=2 L=3"
    assert Ensemble.from_dict(ens.to_dict()) == ens
    assert "L" not in Ensemble("dropout", 5, 10).to_dict()  # other kinds' keys unchanged
    assert "adapter" not in Member(0).to_dict()
    mems = ens.members(TASK.saved_epochs())
    assert [(m.model, m.adapter) for m in mems] == [(i, a) for i in range(2) for a in range(3)]


# --------------------------------------------------------------------------- planning and sweep


def lora_spec(*ensembles: Ensemble) -> SweepSpec:
    return SweepSpec(tasks=(TASK,), methods=(Method("trak", proj_dim=8),),
                     ensembles=ensembles, lds=LDSSpec(m=3))


def test_planner_shares_base_models_and_the_first_adapters():
    plan = make_plan(lora_spec(Ensemble("lora", 2, L=1), Ensemble("lora", 2, L=3)))
    c = Counter(j.kind for j in plan.jobs)
    assert c["basemodel"] == 2 and c["adapter"] == 2 * 3 and c["block"] == 6 and c["q"] == 6
    small, large = plan.evaluations
    assert [a.key for a in small.adapters()] == [large.adapters()[0].key,
                                                 large.adapters()[3].key]
    # Base models (full set, shorter) are not the naive ensemble's models (half, full recipe).
    assert TrainBase(TASK, 0).key != TrainModel(TASK, 0).key
    assert TrainAdapter(TrainBase(TASK, 0), 0).deps() == (TrainBase(TASK, 0),)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    store = tmp_path_factory.mktemp("lora-store")
    sweep = Sweep("toy-gpt", Method("trak", proj_dim=8), ["naive:I=1", "lora:I=1,L=2"],
                  lds=LDSSpec(m=3), store=str(store), progress=False)
    return sweep, sweep.run()


def test_toy_gpt_sweep_runs_end_to_end_with_sensible_costs(swept):
    sweep, df = swept
    by = {r.label: r for r in df.itertuples()}
    naive, lora = by["naive I=1"], by["lora I=1 L=2"]
    assert (lora.L, naive.L, lora.n_members) == (2, 0, 2)
    assert all(-1 <= r.lds <= 1 for r in df.itertuples())
    ev = next(e for e in sweep.spec.evaluations() if e.ensemble.kind == "lora")
    base_t = sweep.store.meta(ev.models()[0].key)["train_time_s"]
    adapter_t = [sweep.store.meta(a.key)["train_time_s"] for a in ev.adapters()]
    assert math.isclose(lora.train_time_s, base_t + sum(adapter_t))  # I*T_base + I*L*T_lora
    assert math.isclose(lora.analytic_train_time_s, base_t + sum(adapter_t))
    base_params = sum(v.numel() for v in sweep.store.get(ev.models()[0].key)[0].values())
    assert naive.params == base_params
    assert lora.params == base_params + 2 * expected_adapter_params() < 2 * naive.params
    # Serving: the analytic I*L*T_serving,LoRA omits only the (tiny) aggregation step.
    assert 0 < lora.analytic_serve_time_s <= lora.serve_time_s


def test_a_smaller_L_then_needs_only_its_result(swept):
    sweep, _ = swept
    plan = make_plan(dataclasses.replace(lora_spec(Ensemble("lora", 1, L=1)),
                                         methods=sweep.spec.methods), sweep.store)
    assert [j.kind for j in plan.todo] == ["result"]


class CheckpointGPT(type(TASK)):
    """toy-gpt whose trained model is the user's: one run, one checkpoint (a state dict)."""

    name = "toy-gpt-own-checkpoint"
    state: dict = {}

    def checkpoints(self):
        return [[self.state]]


def test_lora_adapters_are_fine_tuned_on_the_users_checkpoint(tmp_path):
    model = TASK.build_model()
    with torch.no_grad():  # any weights of the right shape: not what raytda would train
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    CheckpointGPT.state = {k: v.clone() for k, v in model.state_dict().items()}
    task = CheckpointGPT()
    sweep = Sweep(task, Method("trak", proj_dim=8), ["lora:I=1,L=2"], lds=None,
                  store=str(tmp_path), progress=False)
    plan = sweep.plan()
    assert Counter(j.kind for j in plan.jobs)["basemodel"] == 0  # no base is trained
    ev = plan.evaluations[0]
    (base,) = ev.models()
    assert base.describe().startswith("import checkpoints") and all(
        a.deps() == (base,) for a in ev.adapters())
    (row,) = sweep.run().itertuples()
    # the adapters' base is the checkpoint, bit for bit; training time is the adapters'
    stored, _ = sweep.store.get(base.key)
    assert all(torch.equal(stored[f"final/{k}"], v) for k, v in CheckpointGPT.state.items())
    adapter_t = [sweep.store.meta(a.key)["train_time_s"] for a in ev.adapters()]
    assert math.isclose(row.train_time_s, sum(adapter_t)) and row.train_time_s > 0
    assert sweep.scores("lora:I=1,L=2").isfinite().all()
