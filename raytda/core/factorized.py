"""Factorized (Kronecker-structured) projection of per-sample gradients (DESIGN section 8).

For a linear map y_t = W a_t applied at positions t, a sample's gradient of f is the
matrix G = sum_t g_t a_t^T (g_t = df/dy_t). Projecting vec(G) with P = P_rows (x) P_cols
gives the matrix ``P_rows G P_cols^T = sum_t (P_rows u_t)(P_cols v_t)^T`` where (u_t, v_t)
are (g_t, a_t) or (a_t, g_t) depending on how the weight is laid out. Only the small
projections of g_t and a_t are ever formed, never G itself. Each factor has N(0, 1/k_side)
entries, so inner products of features are unbiased estimates of inner products of
gradients (with more variance than a dense Gaussian of the same total k; see
``benchmarks/bench_scale.py`` for measurements). Features are ``vec`` of that k_rows x
k_cols matrix in row-major order, block after block in ``named_parameters`` order.

Everything comes from ONE batched forward and ONE backward of ``sum_i f_i``: a forward hook
on each covered module projects its input a_t and adds a zero scalar leaf to its output; a
tensor hook on that output projects g_t when the backward reaches it. Asking autograd for
the gradient of that zero leaf is what runs the backward: it visits every hooked output
(each is connected to the leaf) and skips every weight gradient (none is requested), so
each layer's g_t is projected and dropped as soon as it exists. This is exact per sample
because f_i depends only on sample i's rows in eval mode (batch norm uses running stats).

Covered modules (their trainable weight, G laid out as the weight is stored):

- ``nn.Linear`` (W is d_out x d_in): rows = g, cols = a; inputs (B, d) or (B, ..., d).
- Hugging Face ``Conv1D`` (GPT-2; W is d_in x d_out, y = a W + b): rows = a, cols = g.
- ``nn.Conv2d`` with ``groups == 1`` and zero padding: a linear map on unfolded input
  patches (``F.unfold``; positions = output locations; W viewed as C_out x C_in*kh*kw).
  P_cols applied to every patch is itself a convolution with k_cols output channels and
  P_cols' rows as kernels, so the patches are never unfolded in memory. Grouped
  convolutions (and other padding modes) are left uncovered.
- ``nn.Embedding`` (W is vocab x d): a linear map on one-hot inputs, rows = one-hot (its
  projection is a column of P_rows), cols = g; positions at ``padding_idx`` get no
  gradient, as in torch. Embeddings with ``max_norm`` or ``scale_grad_by_freq`` are left
  uncovered. LoRA adapters (peft) are covered because ``lora_A`` / ``lora_B`` are
  ``nn.Linear``; their frozen base layer is not a block.

Biases: a covered layer's trainable bias is handled exactly by appending a constant 1 to
a_t (d_in + 1 columns; for Conv1D one more row), so weight and bias form one block. A
trainable bias whose weight is frozen (peft's ``bias='lora_only'``) is its own block with
a_t = (1,). A weight shared by several modules (tied embeddings and output head) is one
block: the uses' terms add up, as their gradients do; their biases are then left
uncovered. A module called several times contributes one term per call. A module whose
output has batch size 1 in a batch of B (GPT-2's position embedding reads ids of shape
(1, T)) is broadcast over the batch: its input and output are expanded to B so each
sample's share of the gradient is seen. Assumed, not checkable from the module tree: a
covered weight enters the output only through calls of its modules (a model that also
uses ``layer.weight`` in a functional op of its own would need that weight uncovered).

Uncovered trainable parameters (norms, parameters used outside a covered module, ...) are
listed per owning module and, by the ``uncovered`` option, either left out ("skip") or
projected densely ("dense"): the block's flattened per-sample gradient times a
``GaussianProjector`` seeded like the factors. LayerNorm, RMSNorm (``nn.RMSNorm`` and
the Llama-family classes of Hugging Face models, each checked on a probe input) and
(eval-mode, running-stat) BatchNorm gradients are read off the same hooked pass
(``sum_t g_t * xhat_t`` and ``sum_t g_t``); anything else takes ``torch.func.vmap`` of its
gradient in a second pass (one sample at a time where vmap cannot run the model), over
tensor inputs and :class:`~raytda.core.batch.Batch` inputs (dict rows) alike.

Per-layer dimensions (``split_k``): the total k is split equally between blocks (capped
at a block's size, the excess going to the others), and a Kronecker block of k_l gets
k_rows = k_cols = round(sqrt(k_l)) (when one side is capped at its width, the other takes
the slack), so k_rows * k_cols <= k_l and the actual total ``dim`` is at most k. A side
that gets its full width is the identity (exact), as is a dense block that gets all its
parameters. "Equal" (LoGra's fixed per-layer dims) was chosen over k_l proportional to
sqrt(n_l) or to n_l by the spread of inner-product estimates measured on CPU-scale
ResNet-9 and Music Transformer (``benchmarks/bench_scale.py``, table 2): it was the best
rule on ResNet-9 and within 2.4x of the best on the Music Transformer, at k = 2048 and
8192, while the others were up to 100x (sqrt) and 33x (params) worse on ResNet-9, whose
2-class head carries most of the gradient. At equal total k the factorized features are
about 20x noisier than a dense Gaussian's (each side's factor adds about 2/sqrt(k_l)
relative variance where a dense block adds 2/k_l): the price of never forming G.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.profiler import record_function

from raytda.core.batch import Batch, add_batch_dim, vmap_view
from raytda.core.kron_blocks import (
    G_ROWS,
    DenseBlock,
    KroneckerBlock,
    factorizable_kind,
    gaussian_factor,
    hooked_dense_kind,
    kron_dims,
    layout,
    split_k,
)
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.outputs import CLASSIFICATION, ModelOutput
from raytda.core.projection import GaussianProjector
from raytda.specs import SpecError, derive_seed

UNCOVERED_MODES = ("dense", "skip")

log = logging.getLogger(__name__)


class _Tap(torch.autograd.Function):
    """``y`` unchanged (a view of it), as a function of ``leaf`` too, whose backward
    passes g through and gives the leaf nothing: asking autograd for the leaf's
    gradient then visits every tapped output without the copy and the reduction of g
    that ``y + leaf`` costs (on GPT-2 small: the (B, T, 50257) logits among them)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return g, None


class FactorizedProjector:
    """Per-sample gradient features of a model, Kronecker-projected layer by layer.

    Args:
        model: a :class:`raytda.core.network.Network` (or any module taking a batch).
        k: total feature budget; ``dim`` (the actual width) is at most k.
        seed: the member's projection seed; each block's factors are drawn from
            ``derive_seed("factorized", seed, block name, side)``.
        uncovered: "dense" (project uncovered parameters with a dense Gaussian) or "skip"
            (leave them out; ``describe()`` lists them either way).
        device: where the factors live and features are computed.
        rule: how k is split between blocks (``split_k``).
    """

    def __init__(self, model: nn.Module, k: int, seed: int, uncovered: str = "dense",
                 device: str | torch.device = "cpu", rule: str = "equal") -> None:
        if uncovered not in UNCOVERED_MODES:
            raise SpecError(f"uncovered={uncovered!r} is not an option; choose 'dense' "
                            f"(project them densely) or 'skip' (leave them out)")
        if k < 1:
            raise SpecError(f"projection dimension k must be >= 1, got {k}")
        self.model = model
        self.k, self.seed, self.uncovered_mode, self.rule = k, seed, uncovered, rule
        self._tap = True  # hooked outputs are views (see _Tap) until the model forbids it
        self.device = torch.device(device)
        self.blocks: list[KroneckerBlock | DenseBlock] = self._find_blocks()
        if not self.blocks:
            raise SpecError("the model has no trainable parameters to take gradients of; "
                            "unfreeze some (requires_grad=True)")
        projected = [b for b in self.blocks if not (isinstance(b, DenseBlock) and b.how == "skipped")]
        if not projected:
            raise SpecError("every trainable parameter is outside the covered layers and "
                            "uncovered='skip' leaves them out; pass uncovered='dense'")
        self.dim = self._assign(projected)

    # ------------------------------------------------------------------ per-block math
    # What a subclass (another sketch of the same hooked a_t and g_t) swaps: how blocks get
    # their dims and random matrices, what the forward hook keeps, and what the gradient
    # hook adds to which features. Discovery and the hooked pass are shared.

    def _assign(self, projected: list[KroneckerBlock | DenseBlock]) -> int:
        """Give each projected block its offset, dims and factors; return the total dim."""
        dims = split_k(self.k, [b.n_params for b in projected], self.rule)
        offset = 0
        for block, k_block in zip(projected, dims):
            block.offset = offset
            if isinstance(block, KroneckerBlock):
                block.k_rows, block.k_cols = kron_dims(k_block, block.rows, block.cols)
                block.p_rows = gaussian_factor(block.k_rows, block.rows,
                                         derive_seed("factorized", self.seed, block.name, "rows"),
                                         self.device)
                block.p_cols = gaussian_factor(block.k_cols, block.cols,
                                         derive_seed("factorized", self.seed, block.name, "cols"),
                                         self.device)
            else:
                block.k = k_block
                if k_block < block.n_params:  # else kept exactly (see gaussian_factor)
                    block.projector = GaussianProjector(
                        block.n_params, k_block, derive_seed("factorized", self.seed, block.name),
                        device=self.device)
            offset += block.dim
        return offset

    def _listens(self, block: KroneckerBlock | DenseBlock) -> bool:
        """Whether the hooked pass hooks this block's modules."""
        return block.dim > 0

    def _kept_input(self, block: KroneckerBlock | DenseBlock, kind: str, module: nn.Module,
                    inp: torch.Tensor, y_out: torch.Tensor, batch: int) -> torch.Tensor | None:
        """What the forward hook keeps for the gradient hook (under no_grad): here the
        projected inputs P_a a_t, (batch, T, k_a), of a Kronecker block; a hooked dense
        block's detached input."""
        if isinstance(block, KroneckerBlock):
            return block.project_input(kind, module, inp, y_out, batch)
        return inp

    def _add_grad(self, out: torch.Tensor, block: KroneckerBlock | DenseBlock, kind: str,
                  module: nn.Module, kept: torch.Tensor | None, g: torch.Tensor,
                  batch: int) -> None:
        """Add one module call's share of the block's features to ``out`` (batch, dim),
        from the output gradient g (the module output's shape) and what was kept."""
        sl = slice(block.offset, block.offset + block.dim)
        if isinstance(block, KroneckerBlock):
            out[:, sl] += block.term(kind, kept, block.project_grad(kind, g, batch))
        else:
            out[:, sl] += block.project(block.hooked_grad(module, kept, g, batch))

    # ------------------------------------------------------------------ discovery

    def _find_blocks(self) -> list[KroneckerBlock | DenseBlock]:
        model = self.model
        names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
        ids = {n: i for i, n in names.items()}
        order = {n: i for i, n in enumerate(names.values())}
        owners: dict[int, list[tuple[str, nn.Module]]] = {}
        for mname, mod in model.named_modules(remove_duplicate=False):
            for p in mod.parameters(recurse=False):
                if id(p) in names:
                    owners.setdefault(id(p), []).append((mname, mod))
        # The same module reached under two names (remove_duplicate=False) is one owner.
        for pid, lst in owners.items():
            seen: dict[int, tuple[str, nn.Module]] = {}
            for mname, mod in lst:
                seen.setdefault(id(mod), (mname, mod))
            owners[pid] = list(seen.values())

        blocks: list[KroneckerBlock | DenseBlock] = []
        done: set[int] = set()
        # (module, block, kind): every module call the hooked pass listens to
        self._uses: list[tuple[nn.Module, KroneckerBlock | DenseBlock, str]] = []
        for pid, pname in names.items():
            if pid in done:
                continue
            mods = owners[pid]
            block = self._kronecker(pid, pname, mods, names, owners)
            if block is not None:
                done.update(ids[n] for n in block.params)
                blocks.append(block)
                continue
            # uncovered: every trainable direct parameter of the (first) owning module
            mname, mod = mods[0]
            params = [(n, p) for n, p in ((names.get(id(p)), p)
                                          for p in mod.parameters(recurse=False))
                      if n is not None and id(p) not in done]
            kind = hooked_dense_kind(mod) if len(mods) == 1 and all(
                len(owners[id(p)]) == 1 for _, p in params) else None
            how = "skipped" if self.uncovered_mode == "skip" else ("hooks" if kind else "vmap")
            block_d = DenseBlock(mname or pname, kind or type(mod).__name__,
                                 sorted((n for n, _ in params), key=order.__getitem__),
                                 sum(p.numel() for _, p in params), how)
            for _, p in params:
                done.add(id(p))
            blocks.append(block_d)
            if how == "hooks":
                self._uses.append((mod, block_d, block_d.kind))
        return blocks

    def _kronecker(self, pid: int, pname: str, mods: list[tuple[str, nn.Module]],
                   names: dict[int, str], owners: dict) -> KroneckerBlock | None:
        kinds = [factorizable_kind(m) for _, m in mods]
        if None in kinds:
            return None
        first = mods[0][1]
        is_weight = all(m.weight is not None and id(m.weight) == pid for _, m in mods)
        is_bias = len(mods) == 1 and kinds[0] != "embedding" \
            and getattr(first, "bias", None) is not None and id(first.bias) == pid
        if not (is_weight or is_bias):
            return None
        if is_bias and first.weight.requires_grad:
            return None  # handled with its weight (or uncovered when the weight is tied)
        # every use must lay the weight's gradient out the same way (true for a tied
        # embedding and output head: both are (vocab, d))
        layouts = {(kind in G_ROWS, *layout(kind, m.weight)) for kind, (_, m) in zip(kinds, mods)}
        if len({(d_g, d_a) if g_rows else (d_a, d_g) for g_rows, d_g, d_a in layouts}) != 1:
            return None
        bias = getattr(first, "bias", None)
        with_bias = is_bias or (len(mods) == 1 and bias is not None and bias.requires_grad
                                and len(owners.get(id(bias), ())) == 1)
        d_g, d_a = layout(kinds[0], first.weight)
        d_a = (d_a if is_weight else 0) + int(with_bias)
        rows, cols = (d_g, d_a) if kinds[0] in G_ROWS else (d_a, d_g)
        params = ([names[id(first.weight)]] if is_weight else []) + (
            [names[id(bias)]] if with_bias else [])
        block = KroneckerBlock(pname, {n: kind for (n, _), kind in zip(mods, kinds)}, params,
                               rows, cols, is_weight, with_bias, rows * cols)
        for (_, m), kind in zip(mods, kinds):
            self._uses.append((m, block, kind))
        return block

    # ------------------------------------------------------------------ metadata

    @property
    def layers(self) -> list[KroneckerBlock]:
        """The Kronecker-projected blocks, in feature order."""
        return [b for b in self.blocks if isinstance(b, KroneckerBlock)]

    @property
    def uncovered(self) -> list[DenseBlock]:
        """Trainable parameters outside the factorization (projected densely or skipped)."""
        return [b for b in self.blocks if isinstance(b, DenseBlock)]

    def _describe_layer(self, b: KroneckerBlock) -> dict:
        """How one covered layer is projected (subclasses say it their way)."""
        return {"k_rows": b.k_rows, "k_cols": b.k_cols}

    def describe(self) -> dict:
        """What the features cover, for results to state: JSON-serializable."""
        return {
            "k": self.k, "dim": self.dim, "seed": self.seed, "rule": self.rule,
            "uncovered_mode": self.uncovered_mode,
            "layers": [{"name": b.name, "kind": b.kind, "modules": b.modules,
                        "params": b.params, "n_params": b.n_params, "shape": [b.rows, b.cols],
                        **self._describe_layer(b), "bias_absorbed": b.with_bias}
                       for b in self.layers],
            "uncovered": [{"name": b.name, "kind": b.kind, "params": b.params,
                           "n_params": b.n_params, "projected": b.how != "skipped",
                           "how": b.how, "k": b.dim} for b in self.uncovered],
            "n_params_covered": sum(b.n_params for b in self.layers),
            "n_params_uncovered": sum(b.n_params for b in self.uncovered),
        }

    # ------------------------------------------------------------------ features

    def _forward(self, x: torch.Tensor | Batch, masks: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        return self.model(x) if masks is None else self.model(x, masks=masks)

    def features(self, x: torch.Tensor | Batch, y: torch.Tensor,
                 masks: tuple[torch.Tensor, ...] | None = None,
                 output: ModelOutput = CLASSIFICATION) -> torch.Tensor:
        """(B, dim) features of one batch; ``masks`` as ``Network.forward`` takes them
        (site-shaped: one sub-network; with a leading batch dimension: one per sample)."""
        return self._pass(x, y, masks, output, False)[0]

    def features_and_q(self, x: torch.Tensor | Batch, y: torch.Tensor,
                       masks: tuple[torch.Tensor, ...] | None = None,
                       output: ModelOutput = CLASSIFICATION
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, dim) features and (B,) TRAK weights ``output.q(logits, y)`` of one batch,
        both from the one hooked pass: Q reads the logits its forward computes anyway
        (the hooks add exact zeros to every output, so they are the plain forward's)."""
        feats, q = self._pass(x, y, masks, output, True)
        assert q is not None
        return feats, q

    def _pass(self, x: torch.Tensor | Batch, y: torch.Tensor,
              masks: tuple[torch.Tensor, ...] | None, output: ModelOutput, want_q: bool
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.model.to(self.device).eval()
        x, y = x.to(self.device), y.to(self.device)
        b = x.shape[0]
        tap = self._tap
        out = torch.zeros(b, self.dim, device=self.device)
        leaf = torch.zeros((), device=self.device, requires_grad=True)

        def on_forward(module: nn.Module, block, kind: str, args: tuple, kwargs: dict,
                       y_out: torch.Tensor) -> torch.Tensor:
            inp = (args[0] if args else next(iter(kwargs.values()))).detach()
            if y_out.shape[0] == 1 and b > 1:
                # Computed once and broadcast over the batch (GPT-2's position embedding
                # reads position ids of shape (1, T)): expanded, every sample's share of
                # the gradient reaches the hook separately; the values downstream are the
                # same.
                inp = inp.expand(b, *inp.shape[1:])
                y_out = y_out.expand(b, *y_out.shape[1:])
            with torch.no_grad(), record_function("factorized.project_input"):
                kept = self._kept_input(block, kind, module, inp, y_out, b)

            def on_grad(g: torch.Tensor) -> None:
                with torch.no_grad(), record_function("factorized.project_grad"):
                    self._add_grad(out, block, kind, module, kept, g, b)

            # Tap: the output itself (a view, no copy) made a function of the leaf;
            # ``y + leaf`` (a copy, and a reduction of g for the leaf) where the model
            # modifies outputs in place, which autograd forbids on such views.
            y_hooked = _Tap.apply(y_out, leaf) if tap else y_out + leaf.to(y_out.dtype)
            y_hooked.register_hook(on_grad)
            return y_hooked

        def hook(blk, kind):
            return lambda mod, a, kw, o: on_forward(mod, blk, kind, a, kw, o)

        handles = [m.register_forward_hook(hook(blk, kind), with_kwargs=True)
                   for m, blk, kind in self._uses if self._listens(blk)]
        q = None
        try:
            with torch.enable_grad():
                with record_function("factorized.forward"):
                    logits = self._forward(x, masks)
                    f = output.f(logits, y)
                if want_q:
                    with torch.no_grad(), record_function("factorized.q"):
                        q = output.q(logits.detach(), y)
                del logits  # the graph keeps what the backward needs
                # runs the backward through every hooked output, no weight gradients
                with record_function("factorized.backward"):
                    torch.autograd.grad(f.sum(), leaf, allow_unused=True)
        except RuntimeError as e:
            if not (tap and "modified inplace" in str(e)):
                raise
            self._tap = False  # this model writes into a layer's output: copies from now
            for h in handles:
                h.remove()
            return self._pass(x, y, masks, output, want_q)
        finally:
            for h in handles:
                h.remove()
        vm = [blk for blk in self.uncovered if blk.how == "vmap"]
        if vm:
            self._vmap_blocks(vm, x, y, masks, output, out)
        return out, q

    def _vmap_blocks(self, blocks: list[DenseBlock], x: torch.Tensor | Batch, y: torch.Tensor,
                     masks: tuple[torch.Tensor, ...] | None, output: ModelOutput,
                     out: torch.Tensor) -> None:
        """Per-sample gradients of parameters no hook reaches, by vmap, then dense P."""
        all_params = dict(self.model.named_parameters())
        params = {n: all_params[n].detach() for blk in blocks for n in blk.params}
        sizes = tuple(getattr(self.model, "mask_sizes", ()))
        batched = masks is not None and any(m.dim() == len(s) + 1 for m, s in zip(masks, sizes))

        def f(p, xi, yi, mi):
            kw = {} if mi is None else {"masks": tuple(m.unsqueeze(0) for m in mi)}
            # xi is one sample as vmap hands it: a tensor, or a dict for a Batch
            logits = functional_call(self.model, p, (add_batch_dim(xi),), kw)
            return output.f(logits, yi.unsqueeze(0))[0]

        b = x.shape[0]
        try:
            with torch.no_grad():  # no graph through the other (trainable) parameters
                # a Batch goes in as its dict of tensors: vmap maps over each one's rows
                g = vmap(grad(f), in_dims=(None, 0, 0, 0 if batched else None))(
                    params, vmap_view(x), y, masks)
        except (RuntimeError, NotImplementedError) as e:
            # ops without a batching rule: the same numbers, one sample at a time
            log.info("vmap over %s failed (%s); per-sample autograd loop instead",
                     type(self.model).__name__, str(e).splitlines()[0] if str(e) else e)
            g = self._loop_grads(params, x, y, masks, batched, output)
        for blk in blocks:
            flat = torch.cat([g[n].reshape(b, -1) for n in blk.params], dim=1)
            out[:, blk.offset:blk.offset + blk.dim] += blk.project(flat)

    def _loop_grads(self, params: dict[str, torch.Tensor], x: torch.Tensor | Batch, y: torch.Tensor,
                    masks: tuple[torch.Tensor, ...] | None, batched: bool,
                    output: ModelOutput) -> dict[str, torch.Tensor]:
        all_params = dict(self.model.named_parameters())
        leaves = [all_params[n] for n in params]
        rows = []
        for i in range(x.shape[0]):
            mi = None if masks is None else tuple(m[i] if batched else m for m in masks)
            mi = None if mi is None else tuple(m.unsqueeze(0) for m in mi)
            with torch.enable_grad():
                fi = output.f(self._forward(x[i:i + 1], mi), y[i:i + 1])[0]
                gi = torch.autograd.grad(fi, leaves, allow_unused=True)
            rows.append([torch.zeros_like(p) if t is None else t for t, p in zip(gi, leaves)])
        return {n: torch.stack([r[j] for r in rows]) for j, n in enumerate(params)}

    def per_sample_features(self, x: torch.Tensor | Batch, y: torch.Tensor, mask: MaskSpec | None = None,
                            split: str = "train", batch_size: int = 256,
                            output: ModelOutput = CLASSIFICATION, start: int = 0
                            ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield (rows, features) over x in batches, masks exactly as
        :func:`raytda.core.grads.per_sample_grads` applies them (``start`` = split row of
        x[0]; per-sample masks are keyed by split row, so batching never changes a row)."""
        for rows, feats, _ in self._batches(x, y, mask, split, batch_size, output, start,
                                            False):
            yield rows, feats

    def per_sample_features_q(self, x: torch.Tensor | Batch, y: torch.Tensor,
                              mask: MaskSpec | None = None, split: str = "train",
                              batch_size: int = 256, output: ModelOutput = CLASSIFICATION,
                              start: int = 0
                              ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """``per_sample_features`` with each batch's Q from the same pass:
        (rows, features, q)."""
        for rows, feats, q in self._batches(x, y, mask, split, batch_size, output, start,
                                            True):
            assert q is not None
            yield rows, feats, q

    def _batches(self, x: torch.Tensor | Batch, y: torch.Tensor, mask: MaskSpec | None,
                 split: str, batch_size: int, output: ModelOutput, start: int, want_q: bool
                 ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor | None]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sizes = getattr(self.model, "mask_sizes", ())
        n = x.shape[0]
        for b0 in range(0, n, batch_size):
            rows = slice(b0, min(b0 + batch_size, n))
            index = torch.arange(start + rows.start, start + rows.stop)
            masks, _ = masks_for(mask, sizes, split, index, self.device)
            feats, q = self._pass(x[rows], y[rows], masks, output, want_q)
            yield rows, feats, q

    def samples_features(self, samples, mask: MaskSpec | None, split: str, batch_size: int,
                         output: ModelOutput = CLASSIFICATION, offset: int = 0
                         ) -> Iterator[tuple[slice, torch.Tensor]]:
        """``per_sample_features`` over every row of a ``Samples``; rows are slices of it.

        ``offset`` is the split row number of ``samples``' row 0."""
        for start, xb, yb in samples.chunks(batch_size):
            for rows, feats in self.per_sample_features(xb, yb, mask, split, batch_size, output,
                                                        offset + start):
                yield slice(start + rows.start, start + rows.stop), feats

    def samples_features_q(self, samples, mask: MaskSpec | None, split: str, batch_size: int,
                           output: ModelOutput = CLASSIFICATION, offset: int = 0
                           ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """``samples_features`` with each batch's Q from the same pass."""
        for start, xb, yb in samples.chunks(batch_size):
            for rows, feats, q in self.per_sample_features_q(xb, yb, mask, split, batch_size,
                                                             output, offset + start):
                yield slice(start + rows.start, start + rows.stop), feats, q
