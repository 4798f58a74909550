"""TRAK (eq. 2): projected gradients, a kernel solve per member, Q-weighted mean.

A member's payload is its train side (projected train features Phi and the Cholesky
factor of Phi^T Phi + ridge I) and its projected test features; scores for any test
rows, stored or new, come from that payload alone. A train side too large for memory
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
    params = ("proj_dim", "ridge")
    needs_q = True
    projected = True
    serves_new_inputs = True

    def finalize(self, spec, train_features, test_features):
        return kernel_payload(train_features, test_features, spec.ridge)

    def score_rows(self, payload, rows):
        from raytda.core.trak import score_rows

        return score_rows(payload["test_features"][rows], payload["train_features"],
                          payload["chol"])

    def query_side(self, payload, device):
        import torch

        # score_rows solves phi (Phi^T Phi + ridge I)^-1 Phi^T per call; against a fixed
        # train side that solve, (Phi^T Phi + ridge I)^-1 Phi^T (k x n), is done once here
        # and a query is one product (the same math, another rounding order).
        phi = payload["train_features"].to(device, torch.float64)
        return {"solved": torch.cholesky_solve(phi.T.contiguous(), payload["chol"].to(device))}

    def score_features(self, side, features):
        import torch

        # float32 per member, as the batch path stores its blocks
        return (features.to(side["solved"].device, torch.float64) @ side["solved"]).float()


    # ------------------------------------------------------------------ row shards

    def finalize_shards(self, spec, shards, test_features):
        import torch

        from raytda.core.trak import kernel_factor

        kern, n = None, 0
        for shard in shards:  # one shard held at a time
            phi = shard["train_features"].double()
            kern = phi.T @ phi if kern is None else kern.addmm_(phi.T, phi)
            n += phi.shape[0]
        if kern is None:
            kern = torch.zeros(test_features.shape[1], test_features.shape[1],
                               dtype=torch.float64)
        chol, used = kernel_factor(kern, n, spec.ridge)
        return {"chol": chol, "test_features": test_features}, {"ridge": used}

    def shard_query_side(self, payload, device):
        return {"chol": payload["chol"].to(device)}  # test features are not queried

    def score_features_shard(self, side, shard, features):
        from raytda.core.trak import score_rows

        chol = side["chol"]
        return score_rows(features.to(chol.device), shard["train_features"].to(chol.device),
                          chol)

    def score_shard(self, payload, shard, rows):
        return self.score_features_shard(payload, shard, payload["test_features"][rows])


def trak_features(net, data, projector, mask: MaskSpec | None, ridge: float | None,
                  args: ComputeArgs, output: ModelOutput | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """One member's TRAK payload with a given projector (dense features): what a sweep's
    member job stores, for tests and benchmarks that fix P themselves."""
    from raytda.core.outputs import CLASSIFICATION
    from raytda.features.dense import DenseFeaturizer

    fz = DenseFeaturizer.with_projector(net, projector, args, output or CLASSIFICATION, data)
    train = fz.features(data.train, mask, "train")
    test = fz.features(data.test, mask, "test")
    payload, info = kernel_payload(train, test, ridge)
    return payload, {**fz.describe(), **info}


def trak_block(net, data, projector, mask: MaskSpec | None, ridge: float | None,
               args: ComputeArgs, output: ModelOutput | None = None
               ) -> tuple[torch.Tensor, dict]:
    """One member's (m x n) TRAK block with a given projector, and its metadata."""
    payload, info = trak_features(net, data, projector, mask, ridge, args, output)
    return TRAK().score_rows(payload, slice(None)), info


def kernel_payload(train_features: torch.Tensor, test_features: torch.Tensor,
                   ridge: float | None) -> tuple[dict[str, torch.Tensor], dict]:
    """A member's TRAK payload from its features: Phi, the Cholesky factor of
    Phi^T Phi + ridge I and phi; and the ridge used."""
    from raytda.core.trak import train_side

    chol, used = train_side(train_features, ridge)
    return ({"train_features": train_features, "chol": chol, "test_features": test_features},
            {"ridge": used})
