"""Per-sample gradients and outputs of a Hugging Face GPT-2 fed dict batches of ragged rows.

Padding must change nothing but float rounding: a row's gradient is the same whether its
batch is padded to its longest row or further, whatever batch it is in, by vmap or by the
per-sample loop; and f is the log-likelihood the model's own loss gives.
"""

from __future__ import annotations

import logging

import pytest
import torch

from raytda.core.grads import _loop_grads, forward_outputs, samples_grads, trainable_params
from raytda.core.masks import MaskSpec
from raytda.core.network import Network
from raytda.core.outputs import CAUSAL_LM
from raytda.data.collate import PadCollate
from raytda.data.samples import DictSamples

transformers = pytest.importorskip("transformers")

# Measured over 8 seeds of this model and data (float32, one thread): padding a batch
# further, or splitting it differently, moves the largest gradient entry by at most
# 9.4e-8 of the largest entry; vmap and the per-sample loop differ by 6.8e-9; f and the
# model's own loss by 1.9e-7 relative. The tolerance is 100x the largest of these.
RTOL = 1e-5


def tiny_gpt2(seed: int) -> torch.nn.Module:
    transformers.utils.logging.set_verbosity_error()  # bos/eos ids beyond a tiny vocab
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=16, n_positions=24, n_embd=16, n_layer=2, n_head=2, attn_pdrop=0.0,
        embd_pdrop=0.1, resid_pdrop=0.1, attn_implementation="eager")
    return transformers.GPT2LMHeadModel(config).eval()


def ragged_rows(n: int, seed: int) -> list[dict]:
    """Tokenizer-shaped rows of 3 to 10 tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(3, 11, (1,), generator=g))
        rows.append({"input_ids": torch.randint(1, 16, (length,), generator=g).tolist(),
                     "attention_mask": [1] * length})
    return rows


def grads(net, samples, mask=None, batch=6) -> torch.Tensor:
    return torch.cat([g for _, g in samples_grads(net, samples, mask, "train", batch, "cpu",
                                                  CAUSAL_LM)])


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= RTOL * a.abs().max())


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    rows = ragged_rows(6, 0)
    samples = DictSamples(rows, collate=PadCollate(labels_from="input_ids"))
    model = tiny_gpt2(0)
    return rows, samples, model, Network(model, samples.example(), mask_dims=1)


def test_padding_further_changes_no_gradient(setup, caplog) -> None:
    rows, samples, _, net = setup
    caplog.set_level(logging.INFO, logger="raytda.core.grads")
    longer = DictSamples(rows, collate=PadCollate(labels_from="input_ids", length=15))
    assert longer.take(torch.arange(6))[0]["input_ids"].shape[1] == 15  # 5 past the longest
    g, g_long = grads(net, samples), grads(net, longer)
    assert close(g, g_long)
    # the padded positions do reach the model (this is not a comparison of equal inputs)
    assert samples.take(torch.arange(6))[0]["input_ids"].shape[1] == 10
    assert not [r for r in caplog.records if "vmap over" in r.getMessage()]  # vmap, no loop


def test_vmap_and_the_per_sample_loop_agree_on_dict_batches(setup) -> None:
    _, samples, _, net = setup
    x, y = samples.take(torch.arange(6))
    loop = _loop_grads(net, trainable_params(net), x, y, None, False, CAUSAL_LM)
    assert close(grads(net, samples), loop)


def test_per_sample_dropout_masks_follow_the_row_not_the_batch(setup) -> None:
    rows, samples, _, net = setup
    spec = MaskSpec(3, 0.1, "per-sample")
    longer = DictSamples(rows, collate=PadCollate(labels_from="input_ids", length=15))
    masked = grads(net, samples, spec, batch=6)
    assert close(masked, grads(net, longer, spec, batch=4))  # other batches, other padding
    assert not close(masked, grads(net, samples))             # and the masks do act


def test_f_is_the_log_likelihood_the_models_own_loss_gives(setup) -> None:
    rows, samples, model, net = setup
    x, y = samples.take(torch.arange(6))
    f, q = forward_outputs(net, x, y, output=CAUSAL_LM)
    for i, row in enumerate(rows):
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss  # mean over the len - 1 predictions
        expected = -loss * (ids.shape[1] - 1)
        assert abs(f[i] - expected) <= RTOL * abs(expected)
        # Q = 1 - geometric-mean token probability of the same predictions
        assert abs(q[i] - (1 - torch.exp(-loss))) <= RTOL
