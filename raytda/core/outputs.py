"""Model output functions: the classification margin f and TRAK's Q = 1 - p_y."""

from __future__ import annotations

import torch


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(p_y / (1 - p_y)) = logit_y - logsumexp(other logits), stable for any logits.

    ``logits`` is (..., C) and ``y`` (...,) class indices.
    """
    correct = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    is_y = torch.arange(logits.shape[-1], device=logits.device) == y.unsqueeze(-1)
    others = logits.masked_fill(is_y, float("-inf"))
    return correct - torch.logsumexp(others, dim=-1)


def one_minus_p(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Q = 1 - p_y, computed as sigmoid(-margin) so it stays accurate when p_y -> 1."""
    return torch.sigmoid(-margin(logits, y))
