"""EK-FAC influence functions: per-layer Kronecker curvature, eigen-corrected, no
whole-model per-sample gradient ever formed.

For a covered weight (``nn.Linear``, Hugging Face ``Conv1D``, ``nn.Conv2d`` on unfolded
patches; LoRA adapters, whose ``lora_A`` / ``lora_B`` are ``nn.Linear``) one sample's
gradient is G = sum_t g_t a_t^T (d_g x d_a; a_t with a 1 appended when the bias is part of
the block, as in :mod:`raytda.core.factorized`). The curvature F of the training loss,
restricted to the layer, is approximated (George et al. 2018, "EK-FAC"):

1. A = E_t[a_t a_t^T] (d_a x d_a) and S = E_t[g_t g_t^T] (d_g x d_g), averaged over every
   position t of every sample (positions with ``attention_mask`` 0 count for nothing, and
   their a_t is zeroed), g_t the output gradient of the summed per-sample loss;
2. eigenbases A = Q_A diag Q_A^T, S = Q_S diag Q_S^T;
3. eigenvalues re-fitted in that basis: Lambda = E_i[(Q_S^T G_i Q_A)^2] (d_g x d_a, squared
   entrywise, averaged over samples i), so F ~ (Q_A (x) Q_S) diag(vec Lambda) (Q_A (x) Q_S)^T;
4. (F + lambda I)^-1 G = Q_S [(Q_S^T G Q_A) / (Lambda + lambda)] Q_A^T, lambda the damping:
   a number, or (None) 0.1 x mean(Lambda) of each layer.

These are kronfluence 1.0.1's definitions (its ``FactorArguments`` / ``ScoreArguments``:
token counts for A and S, sample counts for Lambda, its damping heuristic), so its scores
and these agree (``tests/core/test_ekfac.py`` measures by how much). Scores are
``sum_l <(F_l + lambda I)^-1 G_l(test), G_l(train)>`` over the factored layers, G of the
model output f (the Task's ``ModelOutput``, as raytda's IF uses it); the curvature is of
the Task's training loss, as IF's. Per layer, one batch's per-sample G_l (B x d_g x d_a)
is formed; a whole model's per-sample gradient never is.

Curvature targets (``fisher``): ``"true"`` (default, kronfluence's default too) draws each
prediction's label from the model's own softmax (seeded), so E[G G^T] estimates the Fisher,
which for softmax cross-entropy is the Gauss-Newton matrix raytda's IF solves against;
``"empirical"`` uses the data's labels (kronfluence's ``use_empirical_fisher``).

Embeddings (``nn.Embedding``, W vocab x d, each use an embedding): a_t is the one-hot
e_{x_t} (vocab), so A = diag(token counts) / positions is diagonal and its eigenbasis is
the identity: only S (d x d) is eigendecomposed, Q_A = I is never stored (vocab x vocab),
and Lambda (d x vocab) is re-fitted on Q_S^T G, G = sum_t g_t e_{x_t}^T formed by a
scatter-add of the rotated g_t into the columns of the tokens read. Positions at
``padding_idx`` read a zero a_t (torch gives that row no gradient) and count as positions,
as a zero input to a Linear does.

Not factored (listed by ``uncovered``): weights tied between modules of different kinds
(GPT-2's wte = lm_head.weight: the tied gradient is the embedding's sum_t g_t e_{x_t}^T,
vocab on the input side, plus the head's sum_t e'_t h_t^T, vocab on the output-gradient
side with a dense vocab x vocab covariance; per-module Kronecker factors cannot represent
their sum's curvature or its cross term), norms and every other parameter the factorized
features would project densely. Their parameters add nothing to the scores.

The pass itself is the factorized features' hooked pass (one forward, one backward per
batch; :class:`~raytda.core.factorized.FactorizedProjector`), here handing each covered
block's raw a_t and g_t to the phase at work instead of projecting them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from raytda.core.batch import Batch
from raytda.core.factorized import FactorizedProjector
from raytda.core.kron_blocks import G_ROWS, KroneckerBlock
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.outputs import CLASSIFICATION, IGNORE_INDEX, LossFn, ModelOutput
from raytda.specs import SpecError

#: kinds of module whose weight EK-FAC factors (an embedding only where every use of its
#: weight is an embedding: its one-hot A is diagonal, see the module's docstring)
FACTORED_KINDS = frozenset({"linear", "conv1d", "conv2d", "embedding"})
ONE_HOT = "embedding"
FISHERS = ("true", "empirical")
#: kronfluence's damping heuristic: this times the mean corrected eigenvalue of a layer
HEURISTIC_DAMPING_SCALE = 0.1

# (block, a (B, T, d_a), g (B, T, d_g), positions kept (B, T) or None)
Sink = Callable[[KroneckerBlock, torch.Tensor, torch.Tensor], None]


class _RawPass(FactorizedProjector):
    """The factorized hooked pass with nothing projected: each factored block's a_t (bias
    1 appended, conv patches unfolded) and g_t, both (B, T, d), go to ``sink``; a block
    called several times in one pass has its calls' terms summed by the phase."""

    def __init__(self, model: nn.Module, device: str | torch.device) -> None:
        self.sink: Sink | None = None
        self.keep: torch.Tensor | None = None  # (B, T) positions that count, or None
        super().__init__(model, k=1, seed=0, uncovered="skip", device=device)

    def factored(self, block: Any) -> bool:
        if not isinstance(block, KroneckerBlock):
            return False
        kinds = set(block.uses.values())
        # an embedding tied to a layer of another kind (GPT-2's wte and lm_head) is not
        return kinds <= FACTORED_KINDS and (ONE_HOT not in kinds or kinds == {ONE_HOT})

    def _assign(self, projected: list) -> int:
        return 0  # nothing projected: the pass's feature tensor is (B, 0)

    def _listens(self, block: Any) -> bool:
        return self.factored(block)

    def _kept_input(self, block, kind, module, inp, y_out, batch):
        if kind == ONE_HOT:  # token ids (B, T); -1 where the one-hot a_t is zero
            idx = inp.reshape(batch, -1)
            dead = idx == module.padding_idx if module.padding_idx is not None else None
            if self.keep is not None and self.keep.shape == idx.shape:
                dead = (self.keep == 0) if dead is None else dead | (self.keep == 0)
            return idx if dead is None else idx.masked_fill(dead, -1)
        if not block.with_weight:  # a bias-only block: a_t = (1,) at every position
            positions = y_out[0, 0].numel() if kind == "conv2d" else y_out[0, ..., 0].numel()
            return y_out.new_ones(batch, positions, 1)
        if kind == "conv2d":
            a = F.unfold(inp, module.kernel_size, module.dilation, module.padding,
                         module.stride).transpose(1, 2)
        else:
            a = inp.reshape(batch, -1, inp.shape[-1])
        if block.with_bias:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
        if self.keep is not None and self.keep.shape == a.shape[:2]:
            a = a * self.keep.unsqueeze(-1).to(a.dtype)
        return a

    def _add_grad(self, out, block, kind, module, kept, g, batch):
        if kind == "conv2d":
            g = g.flatten(2).transpose(1, 2)
        assert self.sink is not None
        self.sink(block, kept, g.reshape(batch, -1, g.shape[-1]))


def _keep_positions(x: torch.Tensor | Batch) -> torch.Tensor | None:
    """The positions that count (kronfluence's attention mask): a dict batch's
    ``attention_mask``, else None (every position)."""
    if isinstance(x, Batch) and "attention_mask" in x.keys():
        return x["attention_mask"]
    return None


def _key(block: str, part: str) -> str:
    return f"{block}::{part}"


def _one_hot(block: KroneckerBlock) -> bool:
    """Whether the block's a_t is a one-hot token (an embedding): Q_A = I, never stored."""
    return set(block.uses.values()) == {ONE_HOT}


def _scatter_tokens(idx: torch.Tensor, g: torch.Tensor, vocab: int) -> torch.Tensor:
    """Per-sample G = sum_t g_t e_{x_t}^T, (B, d, vocab), from token ids (B, T) (-1: no
    term) and g (B, T, d): each g_t added into its token's column."""
    live = idx >= 0
    g = g * live.unsqueeze(-1).to(g.dtype)
    out = g.new_zeros(g.shape[0], vocab, g.shape[2])
    out.scatter_add_(1, idx.clamp(min=0).unsqueeze(-1).expand_as(g), g)
    return out.transpose(1, 2)


class EKFAC:
    """EK-FAC curvature of a model's covered layers, and influence scores from it.

    ``fit`` returns the factors as a plain dict of tensors (store it as an artifact);
    ``scores`` takes such a dict back. Both run the factorized features' hooked pass.

    Args:
        model: a :class:`~raytda.core.network.Network` (or any module taking a batch);
            only its trainable parameters are attributed (all, or a LoRA adapter's).
        device: where passes and factors live.
        dtype: the dtype of the factors (covariances are accumulated in it; the
            eigendecompositions run in float64 whatever it is).
        max_grad_bytes: batches are cut so that one layer's per-sample G (B x d_g x d_a)
            stays under this (GPT-2 small's MLP layers: 9.4 MB a sample in float32).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, max_grad_bytes: int = 2**28) -> None:
        self.model = model
        self.max_grad_bytes = max_grad_bytes
        self.device = torch.device(device)
        self.dtype = dtype
        self._pass = _RawPass(model, self.device)
        self.blocks: list[KroneckerBlock] = [b for b in self._pass.blocks
                                             if self._pass.factored(b)]
        if not self.blocks:
            raise SpecError("EK-FAC found no layer it can factor (nn.Linear, Conv1D, Conv2d, "
                            "untied nn.Embedding) "
                            "among the model's trainable parameters")
        self._calls: dict[str, int] = {}  # hook calls per block in one pass (from fit)

    # ------------------------------------------------------------------ metadata

    @property
    def layers(self) -> list[str]:
        """Names of the factored blocks (their weight's parameter name)."""
        return [b.name for b in self.blocks]

    @property
    def uncovered(self) -> list[dict[str, Any]]:
        """Trainable parameters EK-FAC leaves out of the scores, one entry per block."""
        out = []
        for b in self._pass.blocks:
            if b in self.blocks:
                continue
            out.append({"name": b.name, "kind": b.kind, "params": b.params,
                        "n_params": b.n_params})
        return out

    def describe(self) -> dict[str, Any]:
        """What the scores cover, for results to state: JSON-serializable."""
        return {"ekfac_layers": [{"name": b.name, "kind": b.kind, "shape": self._shape(b)}
                                 for b in self.blocks],
                "uncovered": self.uncovered,
                "n_params_covered": sum(b.n_params for b in self.blocks),
                "n_params_uncovered": sum(u["n_params"] for u in self.uncovered)}

    @staticmethod
    def _shape(b: KroneckerBlock) -> list[int]:
        """[d_g, d_a] of a block (G laid out output side first, whatever the weight's)."""
        g_rows = next(iter(b.uses.values())) in G_ROWS
        return [b.rows, b.cols] if g_rows else [b.cols, b.rows]

    # ------------------------------------------------------------------ passes

    def _batches(self, samples, mask: MaskSpec | None, split: str, batch_size: int,
                 rows: np.ndarray | None) -> Iterator[tuple[Any, torch.Tensor, Any]]:
        """(x, y, masks) over ``samples``; ``rows`` numbers them as ``split`` rows (per-sample
        masks are keyed by that number; None: 0..n-1)."""
        sizes = getattr(self.model, "mask_sizes", ())
        # each batch holds one layer's per-sample G at a time: (B, d_g, d_a)
        widest = max(d_g * d_a for d_g, d_a in map(self._shape, self.blocks))
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        batch_size = max(1, min(batch_size, self.max_grad_bytes // (itemsize * widest)))
        for start, xb, yb in samples.chunks(batch_size):
            idx = torch.arange(start, start + yb.shape[0])
            if rows is not None:
                idx = torch.as_tensor(np.asarray(rows)[idx.numpy()], dtype=torch.long)
            masks, _ = masks_for(mask, sizes, split, idx, self.device)
            yield xb, yb, masks

    def _run(self, x, y, masks, output: ModelOutput, sink: Sink) -> None:
        """One hooked forward and backward of ``output.f`` summed over the batch."""
        self._pass.sink = sink
        keep = _keep_positions(x)
        self._pass.keep = None if keep is None else keep.to(self.device)
        try:
            self._pass.features(x, y, masks, output)
        finally:
            self._pass.sink, self._pass.keep = None, None

    def _per_sample(self, on_block: Callable[[KroneckerBlock, torch.Tensor], None],
                    basis: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Sink:
        """A sink that hands ``on_block`` each block's per-sample G in its eigenbasis,
        Q_S^T G Q_A (B, d_g, d_a), once every call of the block in this pass has added
        its term (``fit`` counted them).

        Rotating each position's a_t and g_t (B T (d_a^2 + d_g^2) multiply-adds) is
        cheaper than rotating G (B d_g d_a (d_a + d_g)) unless a sample has about as many
        positions as the layer is wide; the cheaper order is taken."""
        pending: dict[str, tuple[int, torch.Tensor]] = {}

        def sink(block, a, g):
            q_s, q_a = basis[block.name]
            g = g.to(self.dtype)
            if q_a is None:  # one-hot a_t, Q_A = I: Q_S^T G = scatter of Q_S^T g_t
                term = _scatter_tokens(a, g @ q_s, self._shape(block)[1])
            else:
                a = a.to(self.dtype)
                d_g, d_a = q_s.shape[0], q_a.shape[0]
                if a.shape[1] * (d_a * d_a + d_g * d_g) <= d_g * d_a * (d_a + d_g):
                    term = torch.einsum("btg,bta->bga", g @ q_s, a @ q_a)
                else:
                    term = q_s.T @ torch.einsum("btg,bta->bga", g, a) @ q_a
            seen, acc = pending.pop(block.name, (0, None))
            acc = term if acc is None else acc + term
            if seen + 1 < self._calls.get(block.name, 1):
                pending[block.name] = (seen + 1, acc)
            else:
                on_block(block, acc)

        return sink

    # ------------------------------------------------------------------ fitting

    def fit(self, samples, loss_fn: LossFn, mask: MaskSpec | None = None,
            rows: np.ndarray | None = None, batch_size: int = 64, fisher: str = "true",
            seed: int = 0) -> dict[str, torch.Tensor]:
        # Contiguous, as a stored artifact reads back: eigh's eigenvectors come out
        # column-major, and scores from them would differ in the last bits from scores
        # from the same factors read from the store.
        return {k: v.contiguous() for k, v in self._fit(samples, loss_fn, mask, rows,
                                                          batch_size, fisher, seed).items()}

    def _fit(self, samples, loss_fn: LossFn, mask: MaskSpec | None, rows: np.ndarray | None,
             batch_size: int, fisher: str, seed: int) -> dict[str, torch.Tensor]:
        """The EK-FAC factors of ``loss_fn`` (a batch's mean loss, as ``Task.loss``) over
        ``samples``, as a dict of tensors: per block ``name::q_a`` (d_a x d_a), ``name::q_s``
        (d_g x d_g), ``name::lambda`` (d_g x d_a, the corrected eigenvalues) and the
        covariances' eigenvalues ``name::eig_a`` / ``name::eig_s``; ``n_samples``. An
        embedding has no ``q_a`` (the identity) and ``eig_a`` is its token frequencies,
        in vocabulary order.

        ``mask``: the member's dropout masks (``rows`` numbers ``samples`` as train rows,
        for per-sample masks). ``fisher``: "true" (labels drawn from the model, seeded by
        ``seed``) or "empirical" (the data's labels). Two passes over ``samples``: one for
        A and S, one for Lambda (the same labels drawn in both).
        """
        if fisher not in FISHERS:
            raise SpecError(f"fisher must be one of {list(FISHERS)}, got {fisher!r}")
        gen = torch.Generator().manual_seed(seed)
        labels: dict[int, torch.Tensor] = {}  # drawn in the first pass, reused in the second

        def batches():
            return enumerate(self._batches(samples, mask, "train", batch_size, rows))

        def curvature_output(i: int) -> ModelOutput:
            def f(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                if fisher == "true" and i not in labels:
                    labels[i] = sampled_labels(loss_fn, logits.detach(), y, gen)
                y_used = y if fisher == "empirical" else labels[i].to(y.device)
                # the batch's summed per-sample loss, as IF's curvature weights a batch
                return (loss_fn(logits, y_used) * y.shape[0]).reshape(1)
            return ModelOutput("curvature loss", f, f)

        # 1. covariances of a_t and g_t, counted in positions
        cov: dict[str, list] = {b.name: [0, 0, 0, 0] for b in self.blocks}  # A, S, n_a, n_g
        calls: dict[str, int] = {}

        def covariances(block, a, g):
            c = cov[block.name]
            g2 = g.reshape(-1, g.shape[-1]).to(self.dtype)
            if _one_hot(block):  # diag(A): token counts (vocab,)
                ids = a[a >= 0]
                c[0] = c[0] + torch.bincount(ids, minlength=self._shape(block)[1]).to(self.dtype)
                rows = a.numel()
            else:
                a2 = a.reshape(-1, a.shape[-1]).to(self.dtype)
                c[0] = c[0] + a2.T @ a2
                rows = a2.shape[0]
            c[1] = c[1] + g2.T @ g2
            keep = self._pass.keep
            n = rows if keep is None or keep.shape != a.shape[:2] else int(keep.sum())
            c[2] += n
            c[3] += n
            calls[block.name] = calls.get(block.name, 0) + 1

        for i, (xb, yb, masks) in batches():
            calls.clear()
            self._run(xb, yb, masks, curvature_output(i), covariances)
        self._calls = dict(calls)  # every batch calls a block equally often

        # 2. eigenbases
        factors: dict[str, torch.Tensor] = {}
        for b in self.blocks:
            a_cov, s_cov, n_a, n_g = cov[b.name]
            for part, m, n in (("a", a_cov, n_a), ("s", s_cov, n_g)):
                m = m.double() / max(n, 1)
                if part == "a" and _one_hot(b):  # diagonal: eigenvalues, basis I unstored
                    factors[_key(b.name, "eig_a")] = m.to(self.dtype)
                    continue
                evals, evecs = torch.linalg.eigh((m + m.T) / 2)
                factors[_key(b.name, f"q_{part}")] = evecs.to(self.dtype)
                factors[_key(b.name, f"eig_{part}")] = evals.to(self.dtype)

        # 3. eigenvalues corrected in that basis, averaged over samples
        lam = {b.name: torch.zeros(self._shape(b), dtype=self.dtype, device=self.device)
               for b in self.blocks}
        q = self._basis(factors)

        def correct(block, rotated):
            lam[block.name] += rotated.square().sum(0)

        n_samples = 0
        for i, (xb, yb, masks) in batches():
            self._run(xb, yb, masks, curvature_output(i), self._per_sample(correct, q))
            n_samples += yb.shape[0]
        for b in self.blocks:
            factors[_key(b.name, "lambda")] = (lam[b.name] / n_samples).cpu()
        factors["n_samples"] = torch.tensor(n_samples)
        return factors

    # ------------------------------------------------------------------ scoring

    def preconditioned(self, factors: dict[str, torch.Tensor], samples, output: ModelOutput,
                       damping: float | None = None, mask: MaskSpec | None = None,
                       split: str = "test", batch_size: int = 64
                       ) -> dict[str, torch.Tensor]:
        """(F_l + lambda I)^-1 G_l of every row of ``samples``, per block, in the layer's
        eigenbasis: Q_S^T (F_l + lambda I)^-1 G_l Q_A = (Q_S^T G_l Q_A) / (Lambda + lambda),
        (m, d_g, d_a). Inner products with train gradients rotated alike are the scores
        (the rotation is orthogonal), so neither side is ever rotated back.

        ``damping``: lambda, added to every corrected eigenvalue; None: 0.1 x the layer's
        mean corrected eigenvalue (kronfluence's heuristic)."""
        inv = {}
        for b in self.blocks:
            lam = factors[_key(b.name, "lambda")].to(self.device, self.dtype)
            d = HEURISTIC_DAMPING_SCALE * lam.mean() if damping is None else damping
            inv[b.name] = 1.0 / (lam + d)
        parts: dict[str, list[torch.Tensor]] = {b.name: [] for b in self.blocks}

        def precondition(block, rotated):
            parts[block.name].append(rotated * inv[block.name])

        basis = self._basis(factors)
        for xb, yb, masks in self._batches(samples, mask, split, batch_size, None):
            self._run(xb, yb, masks, output, self._per_sample(precondition, basis))
        return {k: torch.cat(v) for k, v in parts.items()}

    def _basis(self, factors: dict[str, torch.Tensor]
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """(Q_S, Q_A) of every block, on the device in the factors' working dtype; Q_A
        None for an embedding (the identity)."""
        return {b.name: (factors[_key(b.name, "q_s")].to(self.device, self.dtype),
                         None if _one_hot(b) else
                         factors[_key(b.name, "q_a")].to(self.device, self.dtype))
                for b in self.blocks}

    def scores(self, factors: dict[str, torch.Tensor], test, train,
               output: ModelOutput = CLASSIFICATION, damping: float | None = None,
               mask: MaskSpec | None = None, batch_size: int = 64) -> torch.Tensor:
        """(m x n) scores sum_l <(F_l + lambda I)^-1 G_l(test_j), G_l(train_i)>, G the
        per-sample gradients of ``output.f`` (``mask`` applied to both sides as the
        member's features are: test rows keyed as "test", train rows as "train")."""
        pre = self.preconditioned(factors, test, output, damping, mask, "test", batch_size)
        m = next(iter(pre.values())).shape[0]
        out = torch.zeros(m, train.n, dtype=self.dtype, device=self.device)
        flat = {k: v.reshape(m, -1) for k, v in pre.items()}
        col = [0]

        def dot(block, rotated):
            b = rotated.shape[0]
            out[:, col[0]:col[0] + b] += flat[block.name] @ rotated.reshape(b, -1).T

        basis = self._basis(factors)
        for xb, yb, masks in self._batches(train, mask, "train", batch_size, None):
            self._run(xb, yb, masks, output, self._per_sample(dot, basis))
            col[0] += yb.shape[0]
        return out.cpu()


def sampled_labels(loss_fn: LossFn, logits: torch.Tensor, y: torch.Tensor,
                   gen: torch.Generator) -> torch.Tensor:
    """Targets drawn from the model's softmax for each prediction the loss scores: the
    true Fisher's labels. Positions the loss ignores (``IGNORE_INDEX``) stay ignored.

    Sequence logits (B, T, V) are scored either against y[t] or, for Hugging Face causal-LM
    labels, against y[t + 1]; which one ``loss_fn`` does is read off its gradient on
    this batch (a cross-entropy's gradient at a logit row is most negative at the label
    it scores)."""
    probs = torch.softmax(logits.float(), dim=-1)
    draw = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=gen)
    draw = draw.reshape(probs.shape[:-1]).to(y.device)
    if logits.dim() == 2 or _label_shift(loss_fn, logits, y) == 0:
        return torch.where(y == IGNORE_INDEX, y, draw)
    out = torch.full_like(y, IGNORE_INDEX)
    out[..., 1:] = torch.where(y[..., 1:] == IGNORE_INDEX, y[..., 1:], draw[..., :-1])
    return out


def _label_shift(loss_fn: LossFn, logits: torch.Tensor, y: torch.Tensor) -> int:
    """0 when ``loss_fn`` scores logits[t] against y[t], 1 against y[t + 1]."""
    z = torch.zeros_like(logits, dtype=torch.float32, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(z, y), z)
    read = grad.argmin(-1)  # at uniform logits: the label each row is scored against
    kept = y[..., 1:] != IGNORE_INDEX
    if bool(kept.any()) and bool((read[..., :-1] == y[..., 1:])[kept].all()) \
            and not bool((read == y)[y != IGNORE_INDEX].all()):
        return 1
    return 0
