"""TRAK (eq. 2): projected gradients, a kernel solve per member, Q-weighted mean.

A member's payload is its train side (projected train features Phi and the Cholesky
factor of Phi^T Phi + ridge I, or for n < k of the n x n Gram Phi Phi^T + ridge I, which
is rebuilt from Phi on load rather than stored) and its projected test features, both
stored in float16 (:func:`raytda.core.trak.pack_features`); scores for any test rows,
stored or new, come from that payload alone. A train side too large for memory
is built and scored in row shards (:mod:`raytda.methods.sharded`): the kernel is the sum
of the shards' Phi_s^T Phi_s, and a shard's scores are phi K^-1 Phi_s^T.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raytda.methods.base import AttributionMethod, register_method
from raytda.methods.sharded import ShardedTrainSide

if TYPE_CHECKING:
    import torch

    from raytda.core.args import ComputeArgs
    from raytda.core.masks import MaskSpec
    from raytda.core.outputs import ModelOutput


@register_method
class TRAK(ShardedTrainSide, AttributionMethod):
    name = "trak"
    params = ("proj_dim", "ridge", "ridge_scale")
    # 1: features stored in float16 with a scale, and no k x k factor when n < k (the
    # Gram's is rebuilt on load); payloads of revision 0 are still read as they are.
    revision = 1
    needs_q = True
    projected = True
    serves_new_inputs = True

    def key_params(self, spec):
        # ridge_scale 0 is TRAK's own ridge, what keys made before the scale existed mean
        out = super().key_params(spec)
        if not spec.ridge_scale:
            out.pop("ridge_scale")
        return out

    def finalize(self, spec, train_features, test_features):
        return kernel_payload(train_features, test_features, spec.ridge,
                              ridge_scale=spec.ridge_scale or 0.0)

    def stored_bytes(self, spec, n_train, n_test):
        # float16 features of every row; the float64 k x k factor only when n_train >= k
        k = spec.proj_dim
        return 2 * (n_train + n_test) * k + (8 * k * k if n_train >= k else 0)

    def loaded(self, payload):
        from raytda.core.trak import gram_side

        if "chol" in payload or "gram_chol" in payload:
            return payload
        chol, _ = gram_side(_features(payload, "train"), float(payload["ridge"]))
        return {**payload, "gram_chol": chol}

    def score_rows(self, payload, rows):
        from raytda.core.trak import score_rows, score_rows_gram

        payload = self.loaded(payload)
        test = _features(payload, "test", rows)
        if "gram_chol" in payload:
            return score_rows_gram(test, _features(payload, "train"), payload["gram_chol"])
        return score_rows(test, _features(payload, "train"), payload["chol"])

    def query_side(self, payload, device):
        import torch

        # score_rows solves phi (Phi^T Phi + ridge I)^-1 Phi^T per call; against a fixed
        # train side that solve, (Phi^T Phi + ridge I)^-1 Phi^T (k x n), is done once here
        # and a query is one product (the same math, another rounding order). Through the
        # Gram (n < k) it is Phi^T (Phi Phi^T + ridge I)^-1.
        payload = self.loaded(payload)
        phi = _features(payload, "train").to(device)
        if "gram_chol" in payload:
            solved = torch.cholesky_solve(phi, payload["gram_chol"].to(device)).T
        else:
            solved = torch.cholesky_solve(phi.T.contiguous(), payload["chol"].to(device))
        return {"solved": solved.contiguous()}

    def score_features(self, side, features):
        from raytda.core.trak import round_features

        # new inputs at the stored test rows' precision; float32 per member, as the batch
        # path stores its blocks
        return (round_features(features.to(side["solved"].device)) @ side["solved"]).float()

    # ------------------------------------------------------------------ row shards

    def shard_payload(self, spec, train_features):
        from raytda.core.trak import pack_features

        values, scale = pack_features(train_features)
        return {"train_features": values, "train_scale": scale}

    def finalize_shards(self, spec, shards, test_features):
        import torch

        from raytda.core.trak import kernel_factor, pack_features, relative_ridge

        kern, n = None, 0
        for shard in shards:  # one shard held at a time
            phi = _features(shard, "train")
            kern = phi.T @ phi if kern is None else kern.addmm_(phi.T, phi)
            n += phi.shape[0]
        if kern is None:
            kern = torch.zeros(test_features.shape[1], test_features.shape[1],
                               dtype=torch.float64)
        # Shards score phi K^-1 Phi_s^T one at a time, which needs the k x k factor.
        ridge = spec.ridge
        if ridge is None and spec.ridge_scale:
            ridge = relative_ridge(float(torch.trace(kern)), n, kern.shape[0], spec.ridge_scale)
        chol, used = kernel_factor(kern, n, ridge)
        test, test_scale = pack_features(test_features)
        return ({"chol": chol, "test_features": test, "test_scale": test_scale,
                 "ridge": torch.tensor(used, dtype=torch.float64)}, {"ridge": used})

    def shard_query_side(self, payload, device):
        return {"chol": payload["chol"].to(device)}  # test features are not queried

    def score_features_shard(self, side, shard, features):
        from raytda.core.trak import round_features

        return self._score_shard(side["chol"], shard, round_features(features))

    def score_shard(self, payload, shard, rows):
        return self._score_shard(payload["chol"], shard, _features(payload, "test", rows))

    @staticmethod
    def _score_shard(chol, shard, test):
        from raytda.core.trak import score_rows

        return score_rows(test.to(chol.device), _features(shard, "train").to(chol.device),
                          chol)


def _features(payload: dict[str, torch.Tensor], split: str, rows: slice | None = None
              ) -> torch.Tensor:
    """A payload's stored ``split`` features (rows of them) in float64."""
    from raytda.core.trak import unpack_features

    values = payload[f"{split}_features"]
    return unpack_features(values if rows is None else values[rows],
                           payload.get(f"{split}_scale"))


def trak_features(net, data, projector, mask: MaskSpec | None, ridge: float | None,
                  args: ComputeArgs, output: ModelOutput | None = None, pack: bool = True
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """One member's TRAK payload with a given projector (dense features): what a sweep's
    member job stores, for tests and benchmarks that fix P themselves; ``pack=False``
    keeps the features in float32 (the math without the storage rounding)."""
    from raytda.core.outputs import CLASSIFICATION
    from raytda.features.dense import DenseFeaturizer

    fz = DenseFeaturizer.with_projector(net, projector, args, output or CLASSIFICATION, data)
    train = fz.features(data.train, mask, "train")
    test = fz.features(data.test, mask, "test")
    payload, info = kernel_payload(train, test, ridge, pack)
    return payload, {**fz.describe(), **info}


def trak_block(net, data, projector, mask: MaskSpec | None, ridge: float | None,
               args: ComputeArgs, output: ModelOutput | None = None, pack: bool = True
               ) -> tuple[torch.Tensor, dict]:
    """One member's (m x n) TRAK block with a given projector, and its metadata
    (``pack``: as in ``trak_features``)."""
    payload, info = trak_features(net, data, projector, mask, ridge, args, output, pack)
    return TRAK().score_rows(payload, slice(None)), info


def kernel_payload(train_features: torch.Tensor, test_features: torch.Tensor,
                   ridge: float | None, pack: bool = True, ridge_scale: float = 0.0
                   ) -> tuple[dict[str, torch.Tensor], dict]:
    """A member's TRAK payload as stored, and the ridge used: its features packed to
    float16 (``pack_features``), the ridge, and the Cholesky factor of Phi^T Phi + ridge I
    when n >= k. When n < k no factor is stored: the Gram's (n x n) is computed here, so
    the member's serving time holds its solve and a singular case fails here, and again
    when the payload is loaded (``TRAK.loaded``), from the same stored values.
    ``pack=False``: float32 features, unscaled (scoring reads both forms).
    ``ridge=None`` with ``ridge_scale`` > 0: the ridge is ``ridge_scale`` times the stored
    kernel's mean nonzero eigenvalue (``relative_ridge``)."""
    import torch

    from raytda.core.trak import (
        gram_side,
        pack_features,
        relative_ridge,
        train_side,
        unpack_features,
        uses_gram,
    )

    if pack:
        train, train_scale = pack_features(train_features)
        test, test_scale = pack_features(test_features)
        payload = {"train_features": train, "train_scale": train_scale,
                   "test_features": test, "test_scale": test_scale}
    else:
        train, train_scale = train_features, None
        payload = {"train_features": train_features, "test_features": test_features}
    phi = unpack_features(train, train_scale)  # the solve sees exactly what is stored
    if ridge is None and ridge_scale > 0:
        ridge = relative_ridge(float(phi.square().sum()), phi.shape[0], phi.shape[1],
                               ridge_scale)
    if uses_gram(phi.shape[0], phi.shape[1], ridge):
        _, used = gram_side(phi, ridge)
    else:
        payload["chol"], used = train_side(phi, ridge)
    payload["ridge"] = torch.tensor(used, dtype=torch.float64)
    return payload, {"ridge": used}
