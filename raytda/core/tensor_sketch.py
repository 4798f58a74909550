"""TensorSketch of per-sample gradients from the hooked pass: one shared k-dim CountSketch.

Setting. A covered layer's per-sample gradient is the matrix G = sum_t u_t v_t^T (rows x
cols, laid out as :mod:`raytda.core.kron_blocks` stores it; (u_t, v_t) is (g_t, a_t) or
(a_t, g_t)). Every block b gets a CountSketch of vec(G_b) into the SAME k coordinates
(``out[:, 0:k]``): coordinate c of the features is

    phi_c = sum_b sum_{p in b} [H_b(p) = c] sigma_b(p) x_p,

a CountSketch of the whole gradient x with a hash H and signs sigma that are independent
between blocks. Uncovered parameters add a dense Gaussian projection N(0, 1/k) of their
flattened gradient into the same coordinates. They take a fully random CountSketch
(seeded per block), not a dense Gaussian: the same unbiasedness and a variance never
above the Gaussian's (below), in O(n_params) memory where a Gaussian held n_params x k
(0.9 GB for the Music Transformer's 111,616 relative-position parameters at k = 2048).
Zero-mean, independent signs make <phi_i, phi_j> unbiased: E<Sx, Sy> = <x, y>.

Two hashes of vec(G_b), both exactly linear in G_b, so the sketch of sum_t u_t v_t^T is the
sum over positions of per-position sketches (the per-sample gradient is never formed for
a large block):

- ``tensor`` (TensorSketch, Pham & Pagh 2013): H(i, j) = (h_r(i) + h_c(j)) mod k,
  sigma(i, j) = s_r(i) s_c(j), with CountSketches C_r (h_r, s_r) of the rows and C_c of
  the columns. The sketch of u v^T is the circular convolution of C_r u and C_c v, so

      phi_b = irfft( sum_t rfft(C_r u_t) * rfft(C_c v_t), n=k ),

  summed in the frequency domain over positions, one irfft per sample and call. Cost per
  position O(rows + cols + k log k). A one-hot side (embedding) or a constant side
  (bias-only block) is a signed shift: those are scattered directly, no FFT.
- ``countsketch``: a fully random hash of the (i, j) pairs, applied to G formed per sample
  (a batched product over positions). Used when the block is small, rows * cols <=
  ``EXPLICIT_FACTOR * k`` (a 2-class head, LoRA adapters, biases): forming G is then no
  dearer than the FFTs, and its variance is never above a dense Gaussian's (below).

Variance (derivation: expand E[(sum_{p != q} sigma_p sigma_q x_p y_q [H(p)=H(q)])^2] and
keep the index patterns whose signs pair up).

- Fully random CountSketch: Var<Sx, Sy> = (|x|^2 |y|^2 + <x,y>^2 - 2 sum_p x_p^2 y_p^2) / k,
  at most a dense Gaussian's (|x|^2 |y|^2 + <x,y>^2) / k.
- TensorSketch of one block (X, Y the rows x cols matrices): four more patterns survive at
  order 1/k, the "rectangles" p = (i,j), q = (i,j') with p' = (i',j), q' = (i',j') (and the
  same with rows and columns swapped), whose two collisions are ONE event h_c(j) = h_c(j').
  Up to O(1/k^2) terms and diagonal corrections,

      Var = (|X|^2 |Y|^2 + <X,Y>^2 + |X^T Y|_F^2 + |X Y^T|_F^2
             + tr((X^T Y)^2) + tr((X Y^T)^2)) / k.

  For rank-one blocks (one position: X = u v^T, Y = u' v'^T) that is (1 + 3 cos^2 +
  cos_u^2 + cos_v^2) |X|^2 |Y|^2 / k, with cos_u, cos_v the cosines of the two sides: 3x a
  dense Gaussian's variance for |X|^2, up to 2.5x off the diagonal. With many positions the
  extra terms are sums of sigma^4 of X^T Y-like products (|X^T X|_F^2 = sum sigma_i^4 <=
  |X|_F^4), so they fall with the gradient's stable rank. Across blocks the hashes are
  independent and no rectangle survives: a model whose gradient spreads over many blocks
  is close to a fully random CountSketch. Small (often rank-one) blocks take the
  ``countsketch`` path above for this reason.
- (Not built) A Gaussian "Khatri-Rao" sketch, phi_c = sum_t (w_c . u_t)(z_c . v_t) /
  sqrt(k) with Gaussian w_c, z_c, has per-coordinate variance 2|X|^4 + 6 sum sigma^4 for
  X = Y (8|X|^4 for rank one: 4x dense), above TensorSketch's 6|X|^4, and costs a
  (rows + cols) x k product per position where TensorSketch costs O(k log k).

Measured on synthetic 48 x 40 blocks, k = 256 (``benchmarks/sketch_rank_one.py``, 1500
draws): k Var / |X|^4 for rank one is 2.19 dense, 2.02 CountSketch, 5.10 TensorSketch and
8.44 Khatri-Rao (theory 2, 2, 6, 8). On whole models (``benchmarks/bench_scale.py``, table
2 in ``benchmarks/README.md``) the spread is compared with a dense Gaussian's and the
Kronecker features' at the same k.

Cost: per position, TensorSketch is two length-k real FFTs and a spectrum product, about
0.1 ms at k = 2048 on one CPU core, where forming G costs a rows x cols GEMM and its
CountSketch one scatter of rows * cols entries per sample (about 40 ns each). Convolutions
with many positions and moderate rows * cols are therefore cheaper on the CountSketch path
(a 576 x 128 block at 256 positions: 6 ms against 56 ms per sample, measured), and blocks
with few positions and many parameters on the TensorSketch path. The rule here only looks
at rows * cols; a rule that also uses each block's positions (known from a probe forward)
is the next step for ResNet-9's speed (``bench_scale.py``, table 1).

Memory: the forward hook keeps only the module's detached input (autograd holds it anyway);
the CountSketches and FFTs run in the gradient hook, over chunks of samples and positions
of at most ``CHUNK_BYTES`` of transients, so one layer's (B, T, k/2+1) spectra exist at a
time and never across the pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from raytda.core.factorized import FactorizedProjector
from raytda.core.kron_blocks import G_ROWS, DenseBlock, KroneckerBlock
from raytda.specs import derive_seed

#: bound on one chunk's transient sketch tensors (bytes)
CHUNK_BYTES = 64 << 20
#: a block with rows * cols <= EXPLICIT_FACTOR * k forms G per sample and CountSketches it
EXPLICIT_FACTOR = 8


@dataclass
class CountSketch:
    """A hash h: [d] -> [k] and signs s in {-1, +1}^d, drawn from a seed on the CPU."""

    h: torch.Tensor  # (d,) int64
    s: torch.Tensor  # (d,) float32
    k: int

    @classmethod
    def draw(cls, d: int, k: int, seed: int, device: torch.device) -> CountSketch:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        h = torch.randint(0, k, (d,), generator=gen)
        s = torch.randint(0, 2, (d,), generator=gen).float() * 2 - 1
        return cls(h.to(device), s.to(device), k)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) or (N, d - 1) rows -> their sketches, (N, k); d - 1 columns mean a
        trailing constant 1 (an absorbed bias), added as one hashed entry."""
        n, d = x.shape
        # (N, k) with index_add over dim 1 and an rfft over the last dim measured 1.5x
        # (index_add) and 1.9x (rfft) faster on the CPU than the transposed (k, N) layout
        out = x.new_zeros(n, self.k)
        out.index_add_(1, self.h[:d], x * self.s[:d])
        if d == self.h.shape[0] - 1:
            out[:, self.h[d]] += self.s[d]
        return out

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, k): as a ``GaussianProjector`` projects (uncovered blocks)."""
        return self.apply(x)

    def matrix(self) -> torch.Tensor:
        """The (k, d) sketch matrix, float64 (for tests)."""
        m = torch.zeros(self.k, self.h.shape[0], dtype=torch.float64, device=self.h.device)
        m[self.h, torch.arange(self.h.shape[0], device=self.h.device)] = self.s.double()
        return m


class SketchBlock:
    """One covered weight's share of the shared sketch (see the module docstring)."""

    def __init__(self, block: KroneckerBlock, k: int, seed: int, device: torch.device,
                 explicit_factor: int = EXPLICIT_FACTOR) -> None:
        self.block, self.k = block, k
        r, c = block.rows, block.cols
        self.explicit = r * c <= explicit_factor * k
        self.how = "countsketch" if self.explicit else "tensor"
        if self.explicit:
            self.flat = CountSketch.draw(r * c, k, derive_seed("sketch", seed, block.name, "flat"),
                                         device)
        else:
            self.rows = CountSketch.draw(r, k, derive_seed("sketch", seed, block.name, "rows"),
                                         device)
            self.cols = CountSketch.draw(c, k, derive_seed("sketch", seed, block.name, "cols"),
                                         device)

    def matrix(self) -> torch.Tensor:
        """The (k, rows * cols) matrix this block applies to row-major vec(G), float64."""
        if self.explicit:
            return self.flat.matrix()
        r, c, k = self.block.rows, self.block.cols, self.k
        idx = (self.rows.h[:, None] + self.cols.h[None, :]) % k  # (r, c)
        sign = self.rows.s.double()[:, None] * self.cols.s.double()[None, :]
        m = torch.zeros(k, r * c, dtype=torch.float64, device=idx.device)
        m[idx.reshape(-1), torch.arange(r * c, device=idx.device)] = sign.reshape(-1)
        return m

    # ------------------------------------------------------------------ per call

    def add(self, out: torch.Tensor, kind: str, module: nn.Module, a: torch.Tensor | None,
            g: torch.Tensor, batch: int) -> None:
        """out (batch, k) += this call's sketch of sum_t u_t v_t^T, from the module's
        detached input ``a`` (None for a bias-only block) and output gradient ``g``."""
        g = g.flatten(2).transpose(1, 2) if kind == "conv2d" else g.reshape(batch, -1, g.shape[-1])
        g = g.to(out.dtype)  # (B, T, d_g)
        if self.explicit:
            self._add_explicit(out, kind, module, a, g)
        elif not self.block.with_weight:
            self._add_bias_only(out, kind, g)
        elif kind == "embedding":
            self._add_embedding(out, module, a, g)
        else:
            self._add_fft(out, kind, module, a, g)

    def _sides(self, kind: str) -> tuple[CountSketch, CountSketch]:
        """(sketch of the input side a, sketch of the gradient side g)."""
        return (self.cols, self.rows) if kind in G_ROWS else (self.rows, self.cols)

    def _inputs(self, kind: str, module: nn.Module, a: torch.Tensor, rows: slice,
                dtype: torch.dtype) -> torch.Tensor:
        """(rows, T, d_a) input side of samples ``rows``, without the bias's 1."""
        a = a[rows]
        if kind == "conv2d":  # patches: (b, C_in * kh * kw, L) -> (b, L, C_in * kh * kw)
            padding = module.padding
            if isinstance(padding, str):  # "valid" / "same": pad first (maybe unevenly)
                pads = []
                for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
                    total = d * (k - 1) if padding == "same" else 0
                    pads += [total // 2, total - total // 2]
                a, padding = F.pad(a, pads), 0
            a = F.unfold(a, module.kernel_size, module.dilation, padding,
                         module.stride).transpose(1, 2)
        return a.reshape(a.shape[0], -1, a.shape[-1]).to(dtype)

    def _add_fft(self, out, kind, module, a, g) -> None:
        cs_a, cs_g = self._sides(kind)
        batch, t, _ = g.shape
        k, n_freq = self.k, self.k // 2 + 1
        # per (sample, position): two real sketches (k) and two spectra (2 * n_freq), float32
        per_pos = 4 * (2 * k + 4 * n_freq) + 4 * (cs_a.h.shape[0] + cs_g.h.shape[0])
        b_step = max(1, min(batch, CHUNK_BYTES // max(1, per_pos * t)))
        t_step = max(1, min(t, CHUNK_BYTES // max(1, per_pos * b_step)))
        for b0 in range(0, batch, b_step):
            rows = slice(b0, min(b0 + b_step, batch))
            a_rows = self._inputs(kind, module, a, rows, out.dtype)  # (b, T, d_a)
            nb = a_rows.shape[0]
            acc = None
            for t0 in range(0, t, t_step):
                ac = a_rows[:, t0:t0 + t_step]
                gc = g[rows, t0:t0 + t_step]
                tc = ac.shape[1]
                fa = torch.fft.rfft(cs_a.apply(ac.reshape(nb * tc, -1)))
                fg = torch.fft.rfft(cs_g.apply(gc.reshape(nb * tc, -1)))
                prod = (fa * fg).reshape(nb, tc, n_freq).sum(1)  # (b, n_freq)
                acc = prod if acc is None else acc + prod
            out[rows] += torch.fft.irfft(acc, n=k)

    def _add_embedding(self, out, module, a, g) -> None:
        # the one-hot side's sketch is s_r(x) e_{h_r(x)}: the term is C_c g_t shifted by
        # h_r(x_t) and signed, scattered straight into out (no FFT)
        batch, t, d = g.shape
        idx = a.reshape(batch, -1)
        keep = torch.ones_like(idx, dtype=out.dtype) if module.padding_idx is None else \
            (idx != module.padding_idx).to(out.dtype)  # torch gives that row no gradient
        t_step = max(1, min(t, CHUNK_BYTES // max(1, 12 * batch * d)))
        for t0 in range(0, t, t_step):
            ic = idx[:, t0:t0 + t_step]
            pos = (self.rows.h[ic][..., None] + self.cols.h) % self.k  # (B, tc, d)
            val = (self.rows.s[ic] * keep[:, t0:t0 + t_step])[..., None] * self.cols.s \
                * g[:, t0:t0 + t_step]
            out.scatter_add_(1, pos.reshape(batch, -1), val.reshape(batch, -1))

    def _add_bias_only(self, out, kind, g) -> None:
        # a_t = (1,): the block's G is sum_t g_t on one side, index 0 on the other
        cs_a, cs_g = self._sides(kind)
        pos = (cs_a.h[0] + cs_g.h) % self.k
        out.index_add_(1, pos, g.sum(1) * (cs_g.s * cs_a.s[0]))

    def _add_explicit(self, out, kind, module, a, g) -> None:
        # small block: G per sample, (B, d_g, d_a), then a CountSketch of its entries
        blk = self.block
        batch = g.shape[0]
        if kind == "embedding":
            idx = a.reshape(batch, -1)
            onehot = F.one_hot(idx, module.num_embeddings).to(out.dtype)
            if module.padding_idx is not None:
                onehot[..., module.padding_idx] = 0
            parts = [g.transpose(1, 2) @ onehot]
        else:
            parts = [g.transpose(1, 2) @ self._inputs(kind, module, a, slice(None), out.dtype)] \
                if blk.with_weight else []
            if blk.with_bias:
                parts.append(g.sum(1).unsqueeze(2))
        m = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        if kind not in G_ROWS:
            m = m.transpose(1, 2)  # rows = a side (conv1d, embedding)
        out.index_add_(1, self.flat.h, m.reshape(batch, -1) * self.flat.s)


class SketchProjector(FactorizedProjector):
    """Per-sample gradient features of a model as one k-dim sketch (module docstring).

    Discovery of blocks and the hooked pass are :class:`FactorizedProjector`'s; here every
    block adds into the same ``k`` coordinates. ``dim == k``. Seeds:
    ``derive_seed("sketch", seed, block name, side)``. ``explicit_factor``: blocks with
    rows * cols <= explicit_factor * k take the ``countsketch`` path (0: TensorSketch for
    every covered block).
    """

    def __init__(self, model: nn.Module, k: int, seed: int, uncovered: str = "dense",
                 device: str | torch.device = "cpu", explicit_factor: int = EXPLICIT_FACTOR
                 ) -> None:
        self.sketches: dict[int, SketchBlock] = {}
        self.explicit_factor = explicit_factor
        super().__init__(model, k, seed, uncovered, device, rule="equal")

    def _assign(self, projected: list[KroneckerBlock | DenseBlock]) -> int:
        for block in projected:
            block.offset = 0
            if isinstance(block, KroneckerBlock):
                self.sketches[id(block)] = SketchBlock(block, self.k, self.seed, self.device,
                                                        self.explicit_factor)
            else:
                block.k = self.k
                block.projector = CountSketch.draw(  # type: ignore[assignment]
                    block.n_params, self.k, derive_seed("sketch", self.seed, block.name),
                    self.device)
        return self.k

    def sketch_of(self, block: KroneckerBlock) -> SketchBlock:
        return self.sketches[id(block)]

    def _listens(self, block: KroneckerBlock | DenseBlock) -> bool:
        return isinstance(block, KroneckerBlock) or block.dim > 0

    def _kept_input(self, block, kind, module, inp, y_out, batch):
        if isinstance(block, KroneckerBlock):
            # a reference only (autograd keeps the input for the backward anyway); the
            # sketching happens in the gradient hook, one layer at a time
            return inp if block.with_weight else None
        return super()._kept_input(block, kind, module, inp, y_out, batch)

    def _add_grad(self, out, block, kind, module, kept, g, batch) -> None:
        if isinstance(block, KroneckerBlock):
            self.sketches[id(block)].add(out, kind, module, kept, g, batch)
        else:
            super()._add_grad(out, block, kind, module, kept, g, batch)

    def _describe_layer(self, b: KroneckerBlock) -> dict:
        return {"sketch": self.sketches[id(b)].how}

    def describe(self) -> dict:
        """What the features cover, for results to state: JSON-serializable (no split
        rule: every block takes the whole k)."""
        d = super().describe()
        del d["rule"]
        return d


def sketch_matrix(proj: SketchProjector) -> torch.Tensor:
    """The explicit (k, n_params) float64 matrix S of a projector, columns in the order of
    the model's trainable ``named_parameters`` (for tests: features == S @ gradient)."""
    names = [n for n, p in proj.model.named_parameters() if p.requires_grad]
    sizes = dict((n, p.numel()) for n, p in proj.model.named_parameters() if p.requires_grad)
    start = dict(zip(names, [0, *list(_cumsum([sizes[n] for n in names]))[:-1]]))
    n_total = sum(sizes.values())
    s = torch.zeros(proj.k, n_total, dtype=torch.float64, device=proj.device)
    for block in proj.layers:
        m = proj.sketch_of(block).matrix()  # columns: row-major (rows, cols) of G
        cols = _block_columns(block, start, sizes, proj.model)
        s[:, cols] += m
    for block in proj.uncovered:
        if block.how == "skipped":
            continue
        p = block.projector.matrix()  # (k, n_params)
        cols = torch.cat([torch.arange(start[n], start[n] + sizes[n]) for n in block.params])
        s[:, cols] += p
    return s


def _cumsum(xs: list[int]) -> list[int]:
    out, t = [], 0
    for x in xs:
        t += x
        out.append(t)
    return out


def _block_columns(block: KroneckerBlock, start: dict[str, int], sizes: dict[str, int],
                   model: nn.Module) -> torch.Tensor:
    """Parameter index of each entry of row-major G (rows x cols), as kron_blocks lays it
    out: the weight as stored (conv2d viewed as C_out x C_in*kh*kw), the bias a last
    column (linear, conv2d) or a last row (conv1d)."""
    names = list(block.params)
    kind = next(iter(block.uses.values()))
    r, c = block.rows, block.cols
    w = names.pop(0) if block.with_weight else None
    b = names.pop(0) if block.with_bias else None
    grid = torch.empty(r, c, dtype=torch.long)
    if kind == "conv1d":  # weight (d_in, d_out), bias one more row
        rw = r - int(b is not None)
        if w is not None:
            grid[:rw] = start[w] + torch.arange(rw * c).reshape(rw, c)
        if b is not None:
            grid[rw] = start[b] + torch.arange(c)
    else:
        cw = c - int(b is not None)
        if w is not None:
            grid[:, :cw] = start[w] + torch.arange(r * cw).reshape(r, cw)
        if b is not None:
            grid[:, cw] = start[b] + torch.arange(r)
    return grid.reshape(-1)


__all__ = ["CHUNK_BYTES", "EXPLICIT_FACTOR", "CountSketch", "SketchBlock", "SketchProjector",
           "sketch_matrix"]

