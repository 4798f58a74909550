"""Train sides built and scored in row shards, for train sets whose features do not fit.

A method whose train side is made of per-train-row tensors plus something summed over the
rows (TRAK: Phi, and the kernel Phi^T Phi) can build a member's payload shard by shard:
each row range [a, b) of the train split is featurized on its own and stored
(``shard_payload``), then one pass over the stored shards reduces what is summed and adds
the test side (``finalize_shards``). Scores come per (test rows, train shard)
(``score_shard``, ``score_features_shard``), so neither n_train x k features nor an
n_test x n_train block is ever held at once. A method declares that it can do this by
implementing this interface; the planner (:mod:`raytda.plan.shards`) shards only such
methods' members, and only when their train side exceeds the memory budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from raytda.methods.spec import Method


class ShardedTrainSide:
    """Mixin for an :class:`~raytda.methods.base.AttributionMethod` whose train side can
    be built from row shards. Implement ``finalize_shards``, ``score_features_shard`` and,
    when what a shard stores is more than its features, ``shard_payload``."""

    def shard_payload(self, spec: Method, train_features: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        """What one shard stores from its rows' features (rows x dim): the features."""
        return {"train_features": train_features}

    def finalize_shards(self, spec: Method, shards: Iterable[dict[str, torch.Tensor]],
                        test_features: torch.Tensor
                        ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The member's payload without its per-row train tensors, from its shards in row
        order (an iterable read one shard at a time) and its test features; and its
        metadata, as ``finalize`` gives them."""
        raise NotImplementedError

    def score_features_shard(self, side: dict[str, torch.Tensor],
                             shard: dict[str, torch.Tensor], features: torch.Tensor
                             ) -> torch.Tensor:
        """Scores (rows x shard rows) of features against one shard, given ``side``
        (``shard_query_side`` of the finalized payload)."""
        raise NotImplementedError

    def shard_query_side(self, payload: dict[str, torch.Tensor], device: torch.device
                         ) -> dict[str, torch.Tensor]:
        """What scoring new inputs keeps of a finalized payload (all of it, by default)."""
        return {k: v.to(device) for k, v in payload.items()}

    def score_shard(self, payload: dict[str, torch.Tensor], shard: dict[str, torch.Tensor],
                    rows: slice) -> torch.Tensor:
        """Scores (len(rows) x shard rows) of stored test rows ``rows`` against one shard."""
        raise NotImplementedError


def can_shard(method: Any) -> bool:
    """Whether an AttributionMethod instance builds its train side in shards."""
    return isinstance(method, ShardedTrainSide)
