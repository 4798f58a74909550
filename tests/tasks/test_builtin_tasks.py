"""The paper's image and music settings as built-in Tasks (and shakespeare-gpt with LoRA).

Each task builds at the paper's scale and at a tiny one, loads its real data when
``/work/shared/data/<x>`` is there (skips cleanly when not), and runs a tiny Sweep end to
end: naive I=1 for all, LoRA I=1, L=2 for the generative ones, LDS over 3 subsets.
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch

from raytda import LDSSpec, Sweep
from raytda.core.grads import n_trainable, per_sample_grads
from raytda.core.lora import load_adapted, train_adapter
from raytda.core.network import Network
from raytda.core.outputs import GENERATIVE, IGNORE_INDEX, token_logprobs
from raytda.core.train import load_state
from raytda.ensembles import Ensemble
from raytda.methods import Method
from raytda.plan.planner import SweepSpec, make_plan
from raytda.specs import SpecError
from raytda.tasks import TASKS, as_task, get_task, task_names
from raytda.tasks.cifar2_resnet9 import CIFAR2ResNet9Task
from raytda.tasks.maestro_mt import MaestroMTTask

# /work/<checkout>/tests/tasks/test_builtin_tasks.py -> /work/shared/data
DATA = Path(os.environ.get("RAYTDA_DATA") or Path(__file__).parents[3] / "shared" / "data")

TINY = {
    "cifar2-resnet9": dict(n_train=16, n_test=3, width=1 / 16, epochs=1, batch_size=8),
    "maestro-mt": dict(n_train=16, n_test=3, seq_len=16, n_layer=1, n_head=2, d_model=16,
                       d_ff=32, epochs=2, batch_size=8),
    "shakespeare-gpt": dict(n_train=16, n_test=3, epochs=2, batch_size=8),
    "mnist-resnet9": dict(n_train=16, n_test=3, epochs=1, batch_size=8),
}
DIRS = {"cifar2-resnet9": "cifar2", "maestro-mt": "maestro", "shakespeare-gpt": "shakespeare",
        "mnist-resnet9": "mnist"}
TRAK = Method("trak", proj_dim=16)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str):
    root = DATA / DIRS[name]
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return get_task(name, data_dir=str(root), **TINY[name])


# --------------------------------------------------------------------------- registry


def test_registry_finds_every_builtin_task_class():
    assert {"cifar2-resnet9", "maestro-mt", "shakespeare-gpt", "mnist-mlp"} <= set(task_names())
    assert isinstance(get_task("maestro-mt"), MaestroMTTask)
    assert isinstance(as_task("cifar2-resnet9", overrides={"n_train": 10}), CIFAR2ResNet9Task)
    with pytest.raises(SpecError, match=r"unknown override\(s\) \['bogus'\]"):
        get_task("maestro-mt", bogus=1)
    with pytest.raises(SpecError, match="unknown setting 'nope'.*maestro-mt"):
        get_task("nope")
    assert set(TASKS) == {"toy-mlp", "digits-mlp", "mnist-mlp", "cifar2-mlp", "toy-gpt",
                          "shakespeare-gpt", "cifar2-resnet9", "mnist-resnet9", "maestro-mt"}


def test_paper_scale_matches_appendix_b():
    from raytda.models.music_transformer import n_params

    mt, rn = get_task("maestro-mt", full=True), get_task("cifar2-resnet9", full=True)
    assert (mt.settings["n_train"], mt.settings["n_test"], mt.settings["seq_len"]) == (5000, 178, 256)
    r = mt.recipe
    assert (r.optimizer, r.lr, r.betas, r.batch_size, r.epochs) == ("adam", 1e-4, (0.9, 0.98), 64, 20)
    # LoRA: base models 10 epochs on the full set, adapters 10 more (appendix C.2)
    assert mt.lora_spec.base_recipe(r).epochs == 10 == mt.lora_spec.adapter_recipe(r).epochs
    assert mt.lora_spec.targets == ("q_proj", "v_proj") and mt.lora_spec.r == 8
    assert n_params(mt.build_model()) == 13_113_732
    r = rn.recipe
    assert (r.optimizer, r.lr, r.momentum, r.batch_size, r.epochs) == ("sgd", 0.01, 0.9, 64, 50)
    assert n_params(rn.build_model()) == 4_825_154
    # the CPU scale is a different task key, so its models are never mixed with the paper's
    assert get_task("maestro-mt").declared_key != mt.declared_key
    assert get_task("cifar2-resnet9").declared_key != rn.declared_key


def test_mnist_resnet9_is_appendix_j_scale_with_cifar2s_resnet9_recipe():
    from raytda.models.resnet9 import n_params

    full, cifar = get_task("mnist-resnet9", full=True), get_task("cifar2-resnet9", full=True)
    assert (full.settings["n_train"], full.settings["width"]) == (60000, 1.0)
    assert full.recipe == cifar.recipe  # the paper states none: borrowed from its CIFAR-2 ResNet-9
    # 10 classes instead of 2 (+ 3 * 512 in the head), one input channel instead of 3
    # (- 2 * 9 * 64 in the first conv)
    assert n_params(full.build_model()) == 4_825_154 + 8 * 513 - 2 * 9 * 64
    assert get_task("mnist-resnet9").declared_key != full.declared_key


def test_tasks_pickle_and_keep_their_key():
    t = get_task("maestro-mt", data_dir="/somewhere", n_train=7)
    back = pickle.loads(pickle.dumps(t))
    assert back.declared_key == t.declared_key and back.data_dir == "/somewhere"
    assert back.settings["n_train"] == 7 and back.known_data_identity() is None
    # where files live is not content
    assert t.with_data_dir("/else").declared_key == t.declared_key
    # the data fingerprints travel with the Task (a Ray worker keys jobs without reading data)
    t.set_data_identity({"train": {"rows": 7}, "test": {"rows": 2}})
    back = pickle.loads(pickle.dumps(t))
    assert back.known_data_identity() == t.known_data_identity() and back.key == t.key


# --------------------------------------------------------------------------- data


def test_cifar2_is_normalized_like_dattri():
    task = tiny("cifar2-resnet9")
    x, y = task.data().train.tensors()
    assert x.shape == (16, 3072) and x.min() >= -1 and x.max() <= 1 and x.min() < -0.5
    assert set(y.tolist()) <= {0, 1}
    assert task.build_model()(x[:2]).shape == (2, 2)


def test_mnist_resnet9_reads_mnist_rows_as_one_channel_images():
    task = tiny("mnist-resnet9")
    x, y = task.data().train.tensors()
    assert x.shape == (16, 784) and set(y.tolist()) <= set(range(10))
    model = task.build_model().eval()
    assert model(x[:2]).shape == (2, 10)
    # a row is the image flattened row-major: the model sees it as (1, 28, 28)
    assert torch.equal(model(x[:2]), model(x[:2].reshape(2, 1, 28, 28)))


def test_maestro_test_targets_attribute_the_last_event_only():
    task = tiny("maestro-mt")
    data = task.data()
    x, y = data.train.tensors()
    assert x.shape == (16, 16) and (y >= 0).all() and torch.equal(x[:, 1:], y[:, :-1])
    xt, yt = data.test.tensors()
    assert (yt[:, :-1] == IGNORE_INDEX).all() and (yt[:, -1] >= 0).all()
    model = task.build_model().eval()
    with torch.no_grad():
        logits = model(xt)
        f = task.output().f(logits, yt)
        last = torch.log_softmax(logits[:, -1], -1).gather(-1, yt[:, -1:]).squeeze(-1)
    assert torch.allclose(f, last)


# --------------------------------------------------------------------------- outputs


def test_ignored_targets_leave_existing_generative_outputs_unchanged():
    torch.manual_seed(0)
    logits, y = torch.randn(5, 7, 11), torch.randint(0, 11, (5, 7))
    lp = torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(GENERATIVE.f(logits, y), lp.sum(-1))  # bit for bit, as before
    assert torch.equal(GENERATIVE.q(logits, y), -torch.expm1(lp.mean(-1)))
    yi = y.clone()
    yi[:, :4] = IGNORE_INDEX
    yi[0, :] = IGNORE_INDEX  # a sample with nothing to attribute
    assert torch.allclose(GENERATIVE.f(logits, yi)[1:], lp[1:, 4:].sum(-1))
    assert GENERATIVE.f(logits, yi)[0] == 0 and GENERATIVE.q(logits, yi)[0] == 0
    assert torch.allclose(GENERATIVE.q(logits, yi)[1:], -torch.expm1(lp[1:, 4:].mean(-1)))
    assert (token_logprobs(logits, yi)[:, :4] == 0).all()


def test_music_transformer_per_sample_gradients_use_vmap_and_match_autograd(caplog):
    task = get_task("maestro-mt", **TINY["maestro-mt"])
    torch.manual_seed(0)
    model = task.build_model()  # random tokens: no data needed for this check
    x = torch.randint(0, 388, (3, 16))
    y = torch.randint(0, 388, (3, 16))
    y[1, :-1] = IGNORE_INDEX
    net = Network(model, x[:1], mask_dims=1).eval()
    with caplog.at_level("INFO", logger="raytda.core.grads"):
        g = torch.cat([g for _, g in per_sample_grads(net, x, y, output=GENERATIVE)])
    assert "per-sample autograd loop" not in caplog.text  # vmap went through
    params = [p for p in net.parameters() if p.requires_grad]
    for b in range(3):
        f = GENERATIVE.f(net(x[b:b + 1]), y[b:b + 1]).sum()
        ref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(f, params)])
        assert torch.allclose(g[b], ref, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- LoRA


def adapter_params(task) -> tuple[int, int]:
    """(low-rank factors only, plus the trainable biases of the adapted layers)."""
    lora = task.lora_spec
    n_layer, d = task.settings["n_layer"], task.settings["d_model"]
    factors = n_layer * len(lora.targets) * lora.r * (d + d)  # r * (d_in + d_out) per matrix
    return factors, factors + n_layer * len(lora.targets) * d  # 'lora_only': q/v biases


@pytest.mark.parametrize("name", ["maestro-mt", "shakespeare-gpt"])
def test_lora_members_span_the_adapter_only(name):
    task = tiny(name)
    data = task.data()
    torch.manual_seed(0)
    base = task.build_model()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    recipe = task.lora_spec.adapter_recipe(task.recipe)
    states = [train_adapter(load_state(task.build_model(), before), task.lora_spec, recipe,
                            data.train, seed=s, forward=task.forward).state for s in (1, 2)]
    # adapters of one base differ
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])
    member = load_adapted(load_state(task.build_model(), before), states[0], task.lora_spec)
    # adapter training left the base unchanged: every frozen tensor is the base's
    frozen = {n.replace(".base_layer", ""): p for n, p in member.named_parameters()
              if not p.requires_grad}
    assert frozen and all(torch.equal(p, before[n]) for n, p in frozen.items())
    factors, with_bias = adapter_params(task)
    net = task.network(member).eval()
    x, y = data.train.take(torch.arange(2))
    g = torch.cat([g for _, g in per_sample_grads(net, x, y, output=task.output())])
    assert g.shape == (2, with_bias) == (2, n_trainable(member))
    assert factors == sum(p.numel() for n, p in member.named_parameters() if "lora_" in n)


def test_planner_shares_base_models_across_L_on_the_music_transformer():
    task = tiny("maestro-mt")  # planning reads the data: its fingerprint is in the keys
    spec = SweepSpec(tasks=(task,), methods=(TRAK,), lds=LDSSpec(m=3),
                     ensembles=(Ensemble("lora", 2, L=1), Ensemble("lora", 2, L=3),
                                Ensemble("naive", 3)))
    c = Counter(j.kind for j in make_plan(spec).jobs)
    assert c["basemodel"] == 2 and c["adapter"] == 6 and c["model"] == 3


# --------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize("name", ["cifar2-resnet9", "mnist-resnet9", "maestro-mt", "shakespeare-gpt"])
def test_tiny_sweep_runs_end_to_end(name, tmp_path):
    task = tiny(name)
    labels = ["naive I=1"] + (["lora I=1 L=2"] if "resnet9" not in name else [])
    ensembles = [label.replace(" ", ":", 1).replace(" ", ",") for label in labels]
    df = Sweep(task, TRAK, ensembles, lds=LDSSpec(m=3), store=str(tmp_path / "store"),
               progress=False).run()
    assert sorted(df.label) == sorted(labels)
    assert df.lds.between(-1, 1).all() and (df.train_time_s > 0).all()
    if "resnet9" not in name:
        lora = df[df.ensemble == "lora"].iloc[0]
        naive = df[df.ensemble == "naive"].iloc[0]
        assert naive.params < lora.params < 2 * naive.params


def test_cli_plans_a_task_class_by_name(tmp_path, capsys):
    from raytda.cli import main

    root = tiny("maestro-mt").data_dir  # planning reads the data: its fingerprint is in the keys
    argv = ["plan", "--setting", "maestro-mt", "--data-dir", root, "--n-train", "16",
            "--ensemble", "lora:I=1,L=3", "--ensemble", "naive:I=3", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "basemodel       1" in text and "adapter         3" in text and "model           3" in text
