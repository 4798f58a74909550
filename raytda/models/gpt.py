"""A small decoder-only (GPT-style) character Transformer.

Pre-norm blocks of causal multi-head self-attention and a 4x GELU MLP, learned positional
embeddings and an untied output head. The attention projections are four separate
``nn.Linear`` modules (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) so that peft can
put LoRA adapters on W_q and W_v alone by module name.

Attention is written out (scores, causal mask, softmax) rather than calling a fused
kernel: the fused kernels have no vmap rule and fall back to slow paths under
``torch.func``, and the explicit form is easy to read.

Dropout is one plain ``nn.Dropout`` module called at ``1 + 2 * n_layer`` sites, all of
width ``d_model`` (the embedding sum, then each block's attention and MLP outputs before
they join the residual stream). Members drive them with masks through
:class:`raytda.core.network.Network` with ``mask_dims=1``, so a mask of shape (d_model,)
is shared by every position of a sequence: a fixed mask removes the same hidden units
everywhere, a sub-network. Attention probabilities get no dropout, since a fixed mask over
(T x T) score entries is not a sub-network.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t attends to positions <= t."""

    def __init__(self, d_model: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        allowed = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        self.register_buffer("allowed", allowed, persistent=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.reshape(b, n, self.n_head, d // self.n_head).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self._split(self.q_proj(x))
        k = self._split(self.k_proj(x))
        v = self._split(self.v_proj(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_head)
        scores = scores.masked_fill(~self.allowed[:n, :n], float("-inf"))
        mixed = torch.softmax(scores, dim=-1) @ v  # (b, heads, n, head_dim)
        return self.out_proj(mixed.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """x + drop(attn(ln(x))), then x + drop(mlp(ln(x)))."""

    def __init__(self, d_model: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, block_size)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.fc_in = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)


class GPT(nn.Module):
    """Token ids (batch, T) -> next-token logits (batch, T, vocab), T <= block_size."""

    def __init__(self, vocab: int, n_layer: int, n_head: int, d_model: int, block_size: int,
                 dropout: float) -> None:
        super().__init__()
        d = d_model
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(block_size, d)
        self.blocks = nn.ModuleList(Block(d, n_head, block_size) for _ in range(n_layer))
        self.ln_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.drop = nn.Dropout(dropout)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # GPT-2's scheme: small normal weights keep the initial logits near uniform, which
        # a default (unit-variance) embedding would not.
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (batch, T) -> logits (batch, T, vocab)."""
        n = idx.shape[-1]
        if n > self.block_size:
            raise ValueError(f"sequence length {n} exceeds block_size {self.block_size}")
        # (1, T), not (T,): the position embedding then has a batch dimension of 1 that
        # broadcasts, which hooked feature passes recognize and expand per sample
        pos = torch.arange(n, device=idx.device)[None]
        h = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for blk in self.blocks:
            h = h + self.drop(blk.attn(blk.ln_attn(h)))
            mlp = blk.fc_out(F.gelu(blk.fc_in(blk.ln_mlp(h))))
            h = h + self.drop(mlp)
        return self.head(self.ln_out(h))
