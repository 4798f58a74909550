"""Music Transformer (Huang et al. 2018): a causal decoder with relative-position attention.

Architecture, matched to the model dattri's benchmark trains for ``maestro_musictransformer``
(``rpr=True``, 6 layers, 8 heads, d_model 512, feed-forward 1024, dropout 0.1, maximum
sequence 256):

- token embedding (no sqrt(d_model) scaling) plus a fixed sinusoidal absolute positional
  encoding, then dropout;
- ``n_layer`` post-LayerNorm blocks: ``x = LN(x + Drop(Attn(x)))``, then
  ``x = LN(x + Drop(W2 Drop(ReLU(W1 x))))``;
- a final LayerNorm after the last block, then an untied linear head to the vocabulary.

Attention is causal multi-head self-attention with relative position representations
(Shaw et al. 2018) computed with the memory-efficient "skewing" trick of Huang et al.:
each layer has one learned matrix ``Er`` of shape (max_len, head_dim), shared by its
heads, whose row ``max_len - 1 - r`` embeds the relative distance ``r = i - j >= 0``
between query i and key j. The logits are ``(q k^T + q Er^T skewed) / sqrt(head_dim)``.
As in dattri, ``Er`` is initialized uniform in [0, 1), the q/k/v projections with the
Xavier bound of their stacked (3 d, d) matrix and zero biases.

Differences from dattri's module that do not change the function or the parameter count:
q, k, v are three ``nn.Linear`` (``q_proj``, ``k_proj``, ``v_proj``) instead of one packed
``in_proj_weight``, so that peft can put LoRA on W_q and W_v by module name; attention is
written out (no fused kernel, which has no vmap rule), so ``torch.func.vmap(grad(...))``
gives per-sample gradients; every dropout is its own ``nn.Dropout`` module (positional,
attention probabilities, attention output, feed-forward hidden, feed-forward output).
dattri's vocabulary is 390 (the 388 events plus END and PAD tokens); ours defaults to the
388 events, since our windows are never padded; pass ``vocab=390`` for dattri's size.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def sinusoidal_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model) table: sin on even features, cos on odd (Vaswani et al. 2017)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return table


def skew(qe: torch.Tensor) -> torch.Tensor:
    """Relative logits S_rel[..., i, j] = qe[..., i, T - 1 - i + j] for j <= i (0 above).

    ``qe[..., i, m]`` is query i against the embedding of relative distance ``T - 1 - m``.
    Zero the entries that would wrap around (m < T - 1 - i), pad one column on the left,
    view the (T, T + 1) result as (T + 1, T) and drop the first row: row i of what is left
    is row i of ``qe`` shifted right by ``T - 1 - i``. O(T * head_dim) memory instead of
    the O(T^2 * head_dim) of gathering an embedding per (i, j) pair.
    """
    t = qe.shape[-1]
    # row i keeps m >= T - 1 - i: a flipped upper triangle
    keep = torch.ones(t, t, dtype=torch.bool, device=qe.device).triu().flip(0)
    qe = qe.masked_fill(~keep, 0.0)
    padded = F.pad(qe, (1, 0))                                  # (..., T, T + 1)
    return padded.reshape(*qe.shape[:-2], t + 1, t)[..., 1:, :]  # (..., T, T)


class RelativeSelfAttention(nn.Module):
    """Causal multi-head self-attention with per-layer learned relative embeddings."""

    def __init__(self, d_model: int, n_head: int, max_len: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model {d_model} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.head_dim = d_model // n_head
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.Er = nn.Parameter(torch.rand(max_len, self.head_dim))
        self.attn_drop = nn.Dropout(dropout)
        allowed = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool))
        self.register_buffer("allowed", allowed, persistent=False)
        # dattri's init: Xavier-uniform over the packed (3 d, d) q/k/v matrix, zero biases
        bound = math.sqrt(6.0 / (4 * d_model))
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.uniform_(proj.weight, -bound, bound)
            nn.init.zeros_(proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.n_head, self.head_dim).transpose(1, 2)  # (b, h, T, hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, T, d_model) -> (batch, T, d_model); position i sees positions <= i."""
        b, t, d = x.shape
        q = self._heads(self.q_proj(x)) * self.head_dim ** -0.5  # scaled once, for both terms
        k = self._heads(self.k_proj(x))
        v = self._heads(self.v_proj(x))
        # the last T rows of Er: distances T-1 ... 0 (row max_len - 1 is distance 0)
        er = self.Er[self.Er.shape[0] - t:]                        # (T, hd)
        scores = q @ k.transpose(-2, -1) + skew(q @ er.T)          # (b, h, T, T)
        scores = scores.masked_fill(~self.allowed[:t, :t], float("-inf"))
        probs = self.attn_drop(torch.softmax(scores, dim=-1))
        mixed = probs @ v                                          # (b, h, T, hd)
        return self.out_proj(mixed.transpose(1, 2).reshape(b, t, d))


class DecoderLayer(nn.Module):
    """Post-LN block: attention, then a ReLU feed-forward, each with dropout and residual."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = RelativeSelfAttention(d_model, n_head, max_len, dropout)
        self.drop1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.ff_drop = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.drop2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, T, d_model) -> (batch, T, d_model)."""
        x = self.norm1(x + self.drop1(self.self_attn(x)))
        ff = self.linear2(self.ff_drop(F.relu(self.linear1(x))))
        return self.norm2(x + self.drop2(ff))


class MusicTransformer(nn.Module):
    """Decoder-only Music Transformer over event tokens.

    Args:
        n_layer: number of decoder blocks.
        n_head: attention heads per block.
        d_model: embedding / residual width.
        d_ff: feed-forward hidden width.
        vocab: number of token ids (388 MIDI events by default).
        max_len: longest sequence (the length of each layer's ``Er`` and of the positional
            table; dattri uses 256).
        dropout: rate of every dropout site.
    """

    def __init__(self, n_layer: int = 6, n_head: int = 8, d_model: int = 512, d_ff: int = 1024,
                 vocab: int = 388, max_len: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.vocab = vocab
        self.max_len = max_len
        self.embedding = nn.Embedding(vocab, d_model)
        self.register_buffer("pos", sinusoidal_encoding(max_len, d_model), persistent=False)
        self.pos_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_head, d_ff, max_len, dropout)
                                    for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-event logits (batch, T, vocab) from token ids (batch, T), T <= max_len."""
        t = idx.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens is longer than max_len {self.max_len}")
        h = self.pos_drop(self.embedding(idx) + self.pos[:t])  # (b, T, d)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))


def n_params(model: nn.Module) -> int:
    """Total number of parameters (the positional table and causal mask are buffers)."""
    return sum(p.numel() for p in model.parameters())
