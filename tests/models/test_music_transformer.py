"""Music Transformer: size at paper scale, relative attention, causality, vmap gradients, LoRA."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from raytda.models.music_transformer import MusicTransformer, n_params, skew

TINY = dict(n_layer=2, n_head=2, d_model=16, d_ff=24, vocab=388, max_len=12, dropout=0.1)


def tiny(**kw) -> MusicTransformer:
    torch.manual_seed(0)
    return MusicTransformer(**{**TINY, **kw})


def test_full_size_parameter_count() -> None:
    """6 layers, 8 heads, d 512, ff 1024, max length 256: the paper's 13.1M parameters."""
    with torch.device("meta"):
        model = MusicTransformer()
    count = n_params(model)
    print(f"Music Transformer (vocab 388) parameters: {count:,}")
    assert round(count / 1e6, 1) == 13.1
    d, ff, vocab, max_len, head_dim = 512, 1024, 388, 256, 64
    per_layer = (4 * (d * d + d)          # q, k, v, out projections
                 + max_len * head_dim     # relative embeddings Er
                 + d * ff + ff + ff * d + d
                 + 2 * 2 * d)             # two LayerNorms
    assert count == vocab * d + 6 * per_layer + 2 * d + d * vocab + vocab


def test_skew_matches_explicit_gather() -> None:
    torch.manual_seed(0)
    t = 6
    qe = torch.randn(2, 3, t, t)
    expect = torch.zeros_like(qe)
    for i in range(t):
        for j in range(i + 1):
            expect[..., i, j] = qe[..., i, t - 1 - i + j]  # distance i - j lives in column t-1-(i-j)
    torch.testing.assert_close(skew(qe), expect)


def test_relative_attention_matches_explicit_formula() -> None:
    """One layer's logits: (q k^T + q e_{i-j}) / sqrt(hd), e_r = Er[max_len - 1 - r]."""
    model = tiny().eval()
    attn = model.layers[0].self_attn
    b, t, d = 2, 5, 16
    x = torch.randn(b, t, d)
    h, hd = attn.n_head, attn.head_dim
    q = attn.q_proj(x).reshape(b, t, h, hd).transpose(1, 2)
    k = attn.k_proj(x).reshape(b, t, h, hd).transpose(1, 2)
    v = attn.v_proj(x).reshape(b, t, h, hd).transpose(1, 2)
    scores = torch.full((b, h, t, t), float("-inf"))
    for i in range(t):
        for j in range(i + 1):
            e = attn.Er[attn.Er.shape[0] - 1 - (i - j)]
            scores[..., i, j] = ((q[..., i, :] * (k[..., j, :] + e)).sum(-1)) / hd ** 0.5
    mixed = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, d)
    torch.testing.assert_close(attn(x), attn.out_proj(mixed))


def test_shapes_and_causality() -> None:
    model = tiny().eval()
    idx = torch.randint(0, 388, (2, 10))
    out = model(idx)
    assert out.shape == (2, 10, 388)
    changed = idx.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 388
    out2 = model(changed)
    torch.testing.assert_close(out2[:, :6], out[:, :6])
    assert not torch.allclose(out2[:, 6:], out[:, 6:])


def test_dropout_sites_are_separate_modules() -> None:
    model = tiny()
    sites = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(sites) == 1 + 4 * TINY["n_layer"]  # positional + per layer attn/out/ff/ff-out
    assert len({id(s) for s in sites}) == len(sites)


def test_vmap_per_sample_gradients_match_autograd() -> None:
    """Per-sample gradient of the next-event log-likelihood, vmap vs one backward each."""
    model = tiny().double().eval()
    x = torch.randint(0, 388, (3, 8))
    y = torch.randint(0, 388, (3, 8))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi.unsqueeze(0),))[0]  # (T, vocab)
        return nn.functional.cross_entropy(logits, yi)

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(3):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1])[0], y[i]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, rtol=1e-9, atol=1e-11)


def test_peft_lora_on_q_and_v() -> None:
    from peft import LoraConfig, get_peft_model

    model = tiny()
    config = LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        lora_dropout=0.0, bias="lora_only")
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    # per adapted matrix: A (r x d_in) + B (d_out x r) + that layer's bias (d_out);
    # q_proj and v_proj are both d_model x d_model, two per layer
    r, d = 8, TINY["d_model"]
    assert trainable == TINY["n_layer"] * 2 * (r * (d + d) + d)
    # B starts at zero: the adapted model computes what the base model did
    peft_model.eval()
    idx = torch.randint(0, 388, (2, 6))
    base = tiny().eval()
    torch.testing.assert_close(peft_model(idx), base(idx))
