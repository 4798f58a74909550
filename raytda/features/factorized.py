"""Factorized gradient features: per-layer Kronecker projections of per-sample gradients,
captured with hooks in one batched backward (:mod:`raytda.core.factorized`; the math is
DESIGN section 8).

Never forms a per-sample gradient: a linear layer's gradient sum_t g_t a_t^T is projected
as sum_t (P_out g_t)(P_in a_t)^T from its hooked inputs and output gradients, so the cost
per sample grows with the layer widths, not with their product. Layers it does not
factor (norms, odd convolutions, ...) are projected densely or left out
(``uncovered="dense"|"skip"``); which ones, and how, is in every payload's metadata and in
the results (``features_uncovered``).

It always projects: methods that need exact gradients (IF's parameter-space curvature)
refuse it, and Grad-Dot / Grad-Cos compare projected features at the method's
``proj_dim``. Its estimates of inner products are noisier than a dense Gaussian's of the
same total k (measured in ``benchmarks/bench_scale.py``): a cheaper, rougher feature.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.features.base import Featurizer, Redrawable, Rows, register_features
from raytda.specs import SpecError, _check

if TYPE_CHECKING:
    import torch


class FactorizedFeaturizer(Featurizer):
    """One member's factorized features (see the module docstring)."""

    def __init__(self, net, k: int, seed: int, args, output, uncovered: str) -> None:
        from raytda.core.factorized import FactorizedProjector

        self.args, self.output = args, output
        self.proj = FactorizedProjector(net, k, seed, uncovered, args.device)
        self.dim = self.proj.dim

    def batches(self, samples, mask, split, offset=0) -> Iterator[tuple[Rows, torch.Tensor]]:
        yield from self.proj.samples_features(samples, mask, split, self.args.grad_batch,
                                              self.output, offset)

    def batches_with_q(self, samples, mask, split, offset=0
                       ) -> Iterator[tuple[Rows, torch.Tensor, torch.Tensor]]:
        yield from self.proj.samples_features_q(samples, mask, split, self.args.grad_batch,
                                                self.output, offset)

    def describe(self) -> dict[str, Any]:
        d = self.proj.describe()
        return {"proj_dim": d["dim"], "n_params": d["n_params_covered"] + d["n_params_uncovered"],
                "features_layers": len(d["layers"]),
                "features_uncovered": [{"name": u["name"], "n_params": u["n_params"],
                                        "how": u["how"]} for u in d["uncovered"]]}


@register_features
@dataclass(frozen=True)
class FactorizedFeatures(Redrawable):
    """Kronecker-projected per-layer gradients; ``uncovered`` says what happens to the
    parameters outside factored layers: ``"dense"`` (projected with a dense Gaussian) or
    ``"skip"`` (left out); ``draw``: which projection (see
    :class:`~raytda.features.base.Redrawable`)."""

    name = "factorized"
    exact = False
    q_in_pass = True  # the hooked forward computes the logits Q reads
    #: the featurizer built per member (parts that share this pass and differ in the
    #: per-block math subclass this one and set their own)
    featurizer_cls: ClassVar[type[FactorizedFeaturizer]] = FactorizedFeaturizer
    uncovered: str = "dense"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.uncovered in ("dense", "skip"),
               f"{self.name} features: uncovered must be 'dense' or 'skip', got "
               f"{self.uncovered!r}")

    def featurizer(self, net, k, seed, args, output, data=None, keep=True):
        if k is None:
            raise SpecError(f"{self.name} gradient features always project: give the method "
                            "a proj_dim")
        return self.featurizer_cls(net, k, seed, args, output, self.uncovered)
