"""Generative settings: the GPT model, text data, f = log-likelihood, Q and its gradients."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from raytda.core.args import ComputeArgs
from raytda.core.grads import forward_outputs, n_trainable, per_sample_grads
from raytda.core.gradsim import similarity_block
from raytda.core.masks import MaskSpec
from raytda.core.outputs import GENERATIVE, one_minus_mean_p, sequence_loglik
from raytda.core.projection import GaussianProjector
from raytda.core.train import load_weights, train_model
from raytda.data import DataError, Dataset
from raytda.data.text import load_synthetic_text, load_text
from raytda.methods.trak import trak_block
from raytda.specs import SpecError
from raytda.tasks import get_task
from raytda.tasks.gpt import ToyGPTTask

# The generic core with the generative model output (f = log-likelihood, Q = 1 - mean p).
lm_forward_outputs = partial(forward_outputs, output=GENERATIVE)
lm_per_sample_grads = partial(per_sample_grads, output=GENERATIVE)
lm_trak_block = partial(trak_block, output=GENERATIVE)


def lm_gradsim_block(model, data, mask, normalize, args):
    """Grad-Dot/Cos of a generative member: exact dense features of f = log-likelihood."""
    from raytda.features import features_from

    fz = features_from("dense").featurizer(model, None, 0, args, GENERATIVE)
    test = fz.features(data.test, mask, "test")
    return similarity_block(test, fz.batches(data.train, mask, "train"), data.n_train, normalize)

SHAKESPEARE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "shakespeare"


# Toy GPTs are latency-bound: extra intra-op threads only add synchronization.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpt_task() -> ToyGPTTask:
    return get_task("toy-gpt")


@pytest.fixture(scope="module")
def gpt_data(gpt_task):
    (x, y), (xt, yt) = gpt_task.load()
    return Dataset(x, y, xt, yt)


@pytest.fixture(scope="module")
def gpt_model(gpt_task, gpt_data) -> nn.Module:
    trained = train_model(gpt_task.build_model, gpt_task.recipe, gpt_data.x_train,
                          gpt_data.y_train, seed=0)
    return load_weights(gpt_task.build_model(), trained.final, gpt_data.x_train[:1],
                        gpt_task.dropout_mask_dims)


# --------------------------------------------------------------------------- settings and data


def test_gpt_settings_are_validated():
    with pytest.raises(SpecError, match="divisible by n_head"):
        get_task("toy-gpt", n_head=3)
    with pytest.raises(SpecError, match="must be integers >= 1"):
        get_task("toy-gpt", n_layer=0)
    with pytest.raises(SpecError, match="seq_len 99 exceeds the model's block_size 16"):
        get_task("toy-gpt", seq_len=99)


def test_training_on_tokens_the_model_cannot_hold_is_one_clear_error(gpt_data):
    from raytda.data.samples import TensorSamples

    small = get_task("toy-gpt", vocab=5)  # the chain emits ids up to 11
    data = TensorSamples(gpt_data.x_train, gpt_data.y_train)
    with pytest.raises(DataError, match="token id 11 but the model's vocab is 5; set vocab "
                                        "to at least 12"):
        small.train(small.build_model(), data, seed=0, device="cpu")
    shorter = get_task("toy-gpt", seq_len=8, block_size=8)
    with pytest.raises(DataError, match="sequences of 16 tokens exceed the model's block_size 8"):
        shorter.train(shorter.build_model(), data, seed=0, device="cpu")


def test_synthetic_text_is_next_token_shifted_and_reproducible(gpt_data):
    d = gpt_data
    assert d.x_train.shape == (40, 16) and d.y_test.shape == (8, 16)
    assert d.x_train.dtype == torch.int64
    assert torch.equal(d.x_train[:, 1:], d.y_train[:, :-1])  # y is x shifted by one
    assert torch.equal(load_synthetic_text(40, 8, seq_len=16).x_train, d.x_train)


def test_text_loader_reads_input_txt_and_explains_missing_files(tmp_path):
    (tmp_path / "input.txt").write_text("abcdefghij" * 50)
    d = load_text(tmp_path, 20, 5, seq_len=8)
    assert d.x_train.shape == (20, 8) and int(d.x_train.max()) < 10
    assert torch.equal(d.x_train[:, 1:], d.y_train[:, :-1])
    with pytest.raises(DataError, match="needs a directory"):
        load_text(None, 20, 5, seq_len=8)
    with pytest.raises(DataError, match="input.txt"):
        load_text(tmp_path / "nope", 20, 5, seq_len=8)


@pytest.mark.skipif(not (SHAKESPEARE / "input.txt").is_file(), reason="no shared data")
def test_tiny_shakespeare_fits_the_registered_setting():
    task = get_task("shakespeare-gpt", data_dir=str(SHAKESPEARE), n_train=50, n_test=5)
    (x, _), _ = task.load()
    assert x.shape == (50, 64) and int(x.max()) < task.settings["vocab"] == 65


# --------------------------------------------------------------------------- model and output


def test_gpt_is_causal(gpt_task):
    model = gpt_task.build_model().eval()
    x = torch.randint(0, 12, (2, 16))
    changed = x.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 12
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :10], b[:, :10]) and not torch.allclose(a[:, 10:], b[:, 10:])


def test_output_is_the_manual_sum_of_token_log_probs(gpt_model, gpt_data):
    x, y = gpt_data.x_test, gpt_data.y_test
    f, q = lm_forward_outputs(gpt_model, x, y, batch_size=3)
    with torch.no_grad():
        logits = gpt_model(x)
    manual = torch.zeros(len(x))
    for b in range(len(x)):
        for t in range(x.shape[1]):
            manual[b] += torch.log(torch.softmax(logits[b, t].double(), -1)[y[b, t]]).float()
    assert torch.allclose(f, manual, atol=1e-4)
    ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
    assert torch.allclose(q, 1 - torch.exp(-ce), atol=1e-6)
    assert ((q > 0) & (q < 1)).all()


def test_q_stays_accurate_at_the_extremes():
    logits = torch.tensor([[[40.0, 0.0], [40.0, 0.0]]])  # p(target) = 1 - 4e-18
    assert one_minus_mean_p(logits, torch.tensor([[0, 0]])).item() == pytest.approx(4.2e-18,
                                                                                   rel=1e-2)
    assert sequence_loglik(logits, torch.tensor([[1, 1]])).item() == pytest.approx(-80.0)


# --------------------------------------------------------------------------- gradients


def brute_force(model: nn.Module, x, y, masks=None) -> torch.Tensor:
    """One autograd call per sample, over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for b in range(len(x)):
        mb = None if masks is None else tuple(m[b:b + 1] if m.dim() == 2 else m for m in masks)
        f = sequence_loglik(model(x[b:b + 1], masks=mb), y[b:b + 1]).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, params)]))
    return torch.stack(rows)


def test_per_sample_gradients_match_autograd(gpt_model, gpt_data):
    x, y = gpt_data.x_train[:5], gpt_data.y_train[:5]
    g = torch.cat([g for _, g in lm_per_sample_grads(gpt_model, x, y, batch_size=2)])
    assert g.shape == (5, n_trainable(gpt_model)) == (5, sum(p.numel() for p in
                                                            gpt_model.parameters()))
    assert torch.allclose(g, brute_force(gpt_model, x, y), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["fixed", "per-sample"])
def test_masked_gradients_match_autograd_with_the_same_masks(gpt_model, gpt_data, mode):
    from raytda.core.masks import masks_for

    x, y = gpt_data.x_train[:3], gpt_data.y_train[:3]
    spec = MaskSpec(seed=7, rate=0.3, mode=mode)
    g = torch.cat([g for _, g in lm_per_sample_grads(gpt_model, x, y, spec, batch_size=2)])
    masks, _ = masks_for(spec, gpt_model.mask_sizes, "train", torch.arange(3))
    assert torch.allclose(g, brute_force(gpt_model, x, y, masks), atol=1e-5, rtol=1e-4)
    unmasked = torch.cat([g for _, g in lm_per_sample_grads(gpt_model, x, y)])
    assert not torch.allclose(g, unmasked)


def test_generative_trak_and_gradsim_blocks(gpt_model, gpt_data):
    args = ComputeArgs(grad_batch=16)
    proj = GaussianProjector(n_trainable(gpt_model), 8, seed=1)
    block, info = lm_trak_block(gpt_model, gpt_data, proj, None, None, args)
    assert block.shape == (gpt_data.n_test, gpt_data.n_train) and torch.isfinite(block).all()
    assert info["n_params"] == n_trainable(gpt_model)
    cos = lm_gradsim_block(gpt_model, gpt_data, None, True, args)
    assert cos.shape == block.shape and cos.abs().max() <= 1 + 1e-5
