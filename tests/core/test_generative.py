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
from raytda.data import DataError
from raytda.data.sources import load_data
from raytda.methods.trak import trak_block
from raytda.models import build_model
from raytda.settings import get_setting
from raytda.specs import DataSpec, ModelSpec, Recipe, Setting, SpecError

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
def gpt_setting() -> Setting:
    return get_setting("toy-gpt")


@pytest.fixture(scope="module")
def gpt_data(gpt_setting):
    return load_data(gpt_setting.data)


@pytest.fixture(scope="module")
def gpt_model(gpt_setting, gpt_data) -> nn.Module:
    trained = train_model(gpt_setting.model, gpt_setting.recipe, gpt_data.x_train,
                          gpt_data.y_train, seed=0)
    return load_weights(gpt_setting.model, trained.final)


# --------------------------------------------------------------------------- specs and data


def test_gpt_spec_validation_and_mlp_keys_unchanged():
    with pytest.raises(SpecError, match=r"a 'gpt' needs \['n_layer'"):
        ModelSpec("gpt", vocab=10)
    with pytest.raises(SpecError, match="divisible by n_head"):
        ModelSpec("gpt", vocab=10, n_layer=1, n_head=3, d_model=16, block_size=8)
    with pytest.raises(SpecError, match=r"\['vocab'\] do not apply to arch 'mlp'"):
        ModelSpec("mlp", 8, (4,), 3, vocab=5)
    assert set(ModelSpec("mlp", 8, (4,), 3).to_dict()) == {"arch", "in_dim", "hidden",
                                                            "out_dim", "dropout"}
    assert "seq_len" not in DataSpec("digits", 10, 5).to_dict()


def test_setting_pairs_text_with_gpt_only(gpt_setting):
    with pytest.raises(SpecError, match="needs token sequences: give the data spec a seq_len"):
        gpt_setting.replace(data=DataSpec("digits", 10, 5))
    with pytest.raises(SpecError, match="needs a generative model"):
        Setting("x", gpt_setting.data, ModelSpec("mlp", 8, (4,), 3), Recipe())
    with pytest.raises(SpecError, match="exceeds the model's block_size"):
        gpt_setting.replace(data=gpt_setting.data.replace(seq_len=99))
    with pytest.raises(SpecError, match="seq_len .* must be None or an integer >= 1"):
        DataSpec("synthetic-text", 10, 5, seq_len=0)


def test_synthetic_text_is_next_token_shifted_and_reproducible(gpt_setting, gpt_data):
    d = gpt_data
    assert d.x_train.shape == (40, 16) and d.y_test.shape == (8, 16)
    assert d.x_train.dtype == torch.int64
    assert torch.equal(d.x_train[:, 1:], d.y_train[:, :-1])  # y is x shifted by one
    assert torch.equal(load_data(gpt_setting.data).x_train, d.x_train)


def test_text_loader_reads_input_txt_and_explains_missing_files(tmp_path):
    (tmp_path / "input.txt").write_text("abcdefghij" * 50)
    d = load_data(DataSpec("text", 20, 5, seq_len=8, root=str(tmp_path)))
    assert d.x_train.shape == (20, 8) and int(d.x_train.max()) < 10
    assert torch.equal(d.x_train[:, 1:], d.y_train[:, :-1])
    with pytest.raises(DataError, match="needs a data directory"):
        load_data(DataSpec("text", 20, 5, seq_len=8))
    with pytest.raises(DataError, match="input.txt"):
        load_data(DataSpec("text", 20, 5, seq_len=8, root=str(tmp_path / "nope")))


@pytest.mark.skipif(not (SHAKESPEARE / "input.txt").is_file(), reason="no shared data")
def test_tiny_shakespeare_fits_the_registered_setting():
    s = get_setting("shakespeare-gpt", data_dir=str(SHAKESPEARE), n_train=50, n_test=5)
    d = load_data(s.data)
    assert d.x_train.shape == (50, 64) and int(d.x_train.max()) < s.model.vocab == 65


# --------------------------------------------------------------------------- model and output


def test_gpt_is_causal(gpt_setting):
    model = build_model(gpt_setting.model).eval()
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
