"""Dense gradient features: exact per-sample gradients, optionally times a dense Gaussian.

Per-sample gradients come from :mod:`raytda.core.grads` (vmap, or the linear fast path
on MLPs). Asked for k dimensions, they are multiplied by a seeded N(0, 1/k) matrix P
(p x k, :class:`~raytda.core.projection.GaussianProjector`), generated once per process
while it fits the memory budget and streamed block by block beyond it. On MLPs whose
inputs are mostly at a background value the zero-input path
(:mod:`raytda.core.sparse_input`) gives the same features with less work; it is used
when it applies and pays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raytda.features.base import Featurizer, Redrawable, Rows, register_features

if TYPE_CHECKING:
    import torch

# Gradients held at once by ``DenseFeatures.features_for_seeds`` (more are projected in
# passes, each generating every projection again).
GRAD_CACHE_BYTES = 2 << 30


def sparse_for(model, projector, data, args):
    """The zero-input path for this member (a ``SparseInputProjection``), when it is on,
    the train inputs are tensors, and it applies and pays; else None."""
    from raytda.core.sparse_input import SparseInputProjection

    held = data.train.tensors()
    if not args.sparse_inputs or held is None:
        return None
    return SparseInputProjection.build(model, projector, held[0], args.grad_batch)


class DenseFeaturizer(Featurizer):
    """One member's dense features (see the module docstring)."""

    def __init__(self, net, k: int | None, seed: int, args, output, data=None,
                 keep: bool = True) -> None:
        from raytda.core import projector_cache
        from raytda.core.grads import n_trainable
        from raytda.core.projection import CHUNK_ROWS, GaussianProjector

        self.net, self.args, self.output, self.data = net, args, output, data
        self.width = n_trainable(net)
        self.dim = self.width if k is None else int(k)
        self.projector: GaussianProjector | None = None
        self.sparse = None  # the zero-input path, once built
        self._sparse_checked = False
        if k is None:
            return
        # Never below one chunk of P: the budget bounds memory, it must not forbid work.
        budget = max(int(args.proj_memory_bytes), CHUNK_ROWS * self.dim * 4)
        if keep:  # a worker builds each distinct P once; reuse is charged (reused_s)
            self.projector = projector_cache.projector(self.width, self.dim, seed, budget,
                                                       args.device, cpu_gemm=args.cpu_gemm)
        else:
            self.projector = GaussianProjector(self.width, self.dim, seed, budget, args.device,
                                               cpu_gemm=args.cpu_gemm)

    @classmethod
    def with_projector(cls, net, projector, args, output, data=None) -> DenseFeaturizer:
        """A featurizer that projects with a given projector (a ``GaussianProjector`` or
        one that behaves like it): for tests and benchmarks that fix P themselves."""
        from raytda.core.grads import n_trainable

        fz = cls.__new__(cls)
        fz.net, fz.args, fz.output, fz.data = net, args, output, data
        fz.width = n_trainable(net)
        fz.dim = projector.k
        fz.projector = projector
        fz.sparse, fz._sparse_checked = None, False
        return fz

    def _sparse_path(self):
        """The zero-input path for this member, built on first use when it applies."""
        if not self._sparse_checked and self.projector is not None and self.data is not None:
            self.sparse = sparse_for(self.net, self.projector, self.data, self.args)
            self._sparse_checked = True
        return self.sparse

    def batches(self, samples, mask, split, offset=0) -> Iterator[tuple[Rows, torch.Tensor]]:
        from raytda.core.grads import samples_grads

        a = self.args
        held = samples.tensors()
        sparse = self._sparse_path() if held is not None else None
        if sparse is not None:
            for idx, g in sparse.batches(self.net, *held, mask, split, a.grad_batch, a.device,
                                         self.output, offset):
                yield idx, sparse.project(g)
            return
        for rows, g in samples_grads(self.net, samples, mask, split, a.grad_batch, a.device,
                                     self.output, offset):
            yield rows, (g if self.projector is None else self.projector.project(g))

    def prepare(self) -> None:
        if self.projector is None:
            return
        if self._sparse_path() is None:
            self.projector.materialize()

    def release(self) -> None:
        if self.projector is None:
            return
        self.sparse, self._sparse_checked = None, False
        self.projector.drop_matrix()

    @property
    def held_bytes(self) -> int:
        p = self.projector
        if p is None:
            return 0
        held = p.working_bytes
        if self.sparse is not None and self.sparse.p_grouped is not None:
            held += self.sparse.p_grouped.numel() * self.sparse.p_grouped.element_size()
        return held

    @property
    def prepared_bytes(self) -> int:
        p = self.projector
        return 0 if p is None or not p.resident else self.width * self.dim * 4

    def reused_s(self) -> float:
        take = getattr(self.projector, "take_reused_s", None)
        return float(take()) if take is not None else 0.0

    def describe(self) -> dict[str, Any]:
        from raytda.core.gemm import resolve

        out: dict[str, Any] = {"n_params": self.width}
        if self.projector is not None:
            out.update(proj_dim=self.dim, cpu_gemm=resolve(self.args.cpu_gemm))
        return out


@register_features
@dataclass(frozen=True)
class DenseFeatures(Redrawable):
    """Exact per-sample gradients; k-dimensional ones through a dense Gaussian (``draw``:
    which one, see :class:`~raytda.features.base.Redrawable`)."""

    name = "dense"
    exact = True

    def featurizer(self, net, k, seed, args, output, data=None, keep=True) -> DenseFeaturizer:
        return DenseFeaturizer(net, k, seed, args, output, data, keep)

    def features_for_seeds(self, net, data, seeds, k, args, output,
                           cache_bytes: int = GRAD_CACHE_BYTES):
        """One unmasked network's per-sample gradients computed once, projected with each
        seed: what a featurizer per seed gives, up to float32 rounding, for one gradient
        pass. Gradients are held up to ``cache_bytes`` (in the zero-input layout when it
        applies, else dense) and each full cache is projected seed by seed, so one
        projection matrix is held at a time."""
        import torch

        from raytda.core.costs import stopwatch
        from raytda.core.grads import n_trainable, samples_grads
        from raytda.core.projection import GaussianProjector
        from raytda.core.sparse_input import SparseInputProjection

        width = n_trainable(net)

        def projector(seed: int) -> GaussianProjector:  # as a featurizer builds it
            return GaussianProjector(width, k, seed, args.proj_memory_bytes, args.device,
                                     cpu_gemm=args.cpu_gemm)

        splits = {"train": data.train, "test": data.test}
        tensors = {s: v.tensors() for s, v in splits.items()}
        layout = None  # the zero-input layout, shared by every seed's projector
        if args.sparse_inputs and all(t is not None for t in tensors.values()):
            layout = SparseInputProjection.build(net, projector(seeds[0]),
                                                 tensors["train"][0], args.grad_batch,
                                                 materialize=False)
        feats = [{s: torch.empty(v.n, k, dtype=torch.float32) for s, v in splits.items()}
                 for _ in seeds]
        info: dict = {"grad_s": 0.0, "project_s": [0.0] * len(seeds), "passes": 0,
                      "sparse_inputs": layout is not None, "n_params": width, "proj_dim": k}
        held: list[tuple[str, object, torch.Tensor]] = []
        held_bytes = 0

        def flush() -> None:
            nonlocal held_bytes
            for d, seed in enumerate(seeds):
                spent = stopwatch(args.device)
                proj = projector(seed)
                fn = proj.project if layout is None else layout.for_projector(proj).project
                for split, rows, g in held:
                    feats[d][split][rows] = fn(g).float().cpu()
                del proj, fn  # one seed's P at a time
                info["project_s"][d] += spent()
            held.clear()
            held_bytes = 0
            info["passes"] += 1

        for split, samples in splits.items():
            if layout is not None:
                it = layout.batches(net, *tensors[split], None, split, args.grad_batch,
                                    args.device, output)
            else:
                it = samples_grads(net, samples, None, split, args.grad_batch, args.device,
                                   output)
            while True:
                spent = stopwatch(args.device)
                item = next(it, None)
                info["grad_s"] += spent()
                if item is None:
                    break
                rows, g = item
                held.append((split, rows, g))
                held_bytes += g.numel() * g.element_size()
                if held_bytes >= cache_bytes:
                    flush()
        if held:
            flush()
        return feats, info
