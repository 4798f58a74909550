"""Model outputs: the function f attribution differentiates, and TRAK's weight Q.

Two kinds of setting, one interface (``ModelOutput``), so that gradients, TRAK, Grad-Dot
and Grad-Cos are written once:

- classification: f is the margin ``log(p_y / (1 - p_y))`` and Q = 1 - p_y;
- generative (a token sequence x with next-token targets y): f is the log-likelihood
  ``sum_t log p(y_t | x_<=t)`` (DESIGN section 2), and ``Q = 1 - exp(mean_t log p(y_t |
  x_<=t))``, one minus the geometric-mean token probability.

Why that Q for sequences and not the alternatives:

- TRAK's Q is the loss's derivative with respect to the output, ``1 - p_y`` for the margin.
  Taken literally with f = log-likelihood the training loss is exactly -f, so Q would be
  the constant 1: no reweighting at all.
- ``1 - p(sequence)`` is the literal "one minus the probability of the target" but p of a
  whole sequence is ``exp(-T * cross-entropy)``, about 1e-40 for 64 characters at 1.4 nats,
  so Q is 1 to machine precision for every sample: again no information.
- The per-token geometric mean keeps the classification meaning (how far the model is from
  fitting the sample, in [0, 1), down-weighting samples it already fits) on the scale of a
  single prediction, independent of length. It is the convention of dattri's language-model
  TRAK (probability = exp(-mean token loss)), which the paper's authors use.

Ignored positions: a target equal to ``IGNORE_INDEX`` (-100, PyTorch's cross-entropy
convention) is left out of f and of Q's mean, so a Task can attribute part of a sequence.
The Music Transformer task gives its test targets -100 everywhere but the last position:
its test output is ``log p(event | prompt)``, one predicted event after a held-out prompt,
as in the paper. Without ignored targets f and Q are bit for bit what they were (the
ignore path adds exact zeros to the sum and selects the plain mean), and no branch depends
on the data, so ``torch.func.vmap`` still applies.

Padding: a padded position contributes nothing to f, to Q's mean, or to their gradients,
because its target is ``IGNORE_INDEX``. Dict rows (:class:`raytda.data.samples.DictSamples`)
see to it: their collate pads labels with -100, and any label where ``attention_mask`` is
0 becomes -100 too, so f and Q never need the mask themselves.

Hugging Face labels: a causal LM from ``transformers`` takes ``labels`` aligned with
``input_ids`` (usually a copy of them) and shifts them inside its own loss: the logits at
position t predict ``labels[t + 1]``. :data:`CAUSAL_LM` and :func:`next_token_cross_entropy`
make the same shift, so such labels are used as the collator gives them; f is still the
sequence log-likelihood ``sum_t log p(labels[t + 1] | x_<=t)`` over kept positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


#: a target that is not predicted (left out of f and Q), as in ``F.cross_entropy``
IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y_t | x_<=t) for every position: logits (..., T, V), y (..., T) -> (..., T).

    Positions whose target is ``IGNORE_INDEX`` give exactly 0."""
    keep = y != IGNORE_INDEX
    # any valid index for the gather at ignored positions; its value is zeroed below
    lp = torch.log_softmax(logits, dim=-1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return lp.masked_fill(~keep, 0.0)


def sequence_loglik(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The generative model output f: sum of token log-probs over the positions whose
    target is not ``IGNORE_INDEX``, (..., T, V) -> (...)."""
    return token_logprobs(logits, y).sum(-1)


def mean_token_logprob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean log-prob over the positions not ignored (..., T, V) -> (...).

    Both means are computed and one is selected per sample (no data-dependent branch, so
    vmap applies): with nothing ignored it is ``.mean(-1)`` itself, bit for bit. A sample
    whose every target is ignored has mean 0 (Q = 0: it carries no weight)."""
    lp = token_logprobs(logits, y)
    kept = (y != IGNORE_INDEX).sum(-1)
    masked_mean = lp.sum(-1) / kept.clamp(min=1).to(lp.dtype)
    return torch.where(kept == y.shape[-1], lp.mean(-1), masked_mean)


def one_minus_mean_p(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Q = 1 - exp(mean token log-prob over the positions not ignored), as -expm1 so it
    stays accurate when the fit is poor or near perfect."""
    return -torch.expm1(mean_token_logprob(logits, y))


@dataclass(frozen=True)
class ModelOutput:
    """f (differentiated per sample) and Q (TRAK's train weight), both from (logits, y).

    Each maps a batch of logits and targets to one value per sample. ``class_targets``
    says that y indexes the logits' last dimension (checked row by row before any work:
    integers in range, ``ignore_index`` allowed); leave it False for targets of another
    kind, which raytda then does not check.
    """

    name: str
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    class_targets: bool = False
    ignore_index: int | None = None


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default training loss: mean cross-entropy over every prediction, for (B, C)
    logits against (B,) labels and (B, T, V) against (B, T) next tokens alike."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def next_token_loglik(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """f for Hugging Face causal-LM labels: ``sequence_loglik`` with logits[t] scored
    against labels[t + 1]; (..., T, V), (..., T) -> (...)."""
    return sequence_loglik(logits[..., :-1, :], labels[..., 1:])


def one_minus_mean_next_p(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Q for Hugging Face causal-LM labels: ``one_minus_mean_p`` with the same shift."""
    return one_minus_mean_p(logits[..., :-1, :], labels[..., 1:])


def next_token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the kept positions (the training loss of a
    Hugging Face causal LM given ``labels``): logits[t] against labels[t + 1]."""
    return mean_cross_entropy(logits[..., :-1, :], labels[..., 1:])


CLASSIFICATION = ModelOutput("margin", margin, one_minus_p, class_targets=True)
GENERATIVE = ModelOutput("sequence log-likelihood", sequence_loglik, one_minus_mean_p,
                         class_targets=True, ignore_index=IGNORE_INDEX)
#: sequence log-likelihood for labels aligned with input_ids, as Hugging Face takes them
CAUSAL_LM = ModelOutput("next-token log-likelihood", next_token_loglik, one_minus_mean_next_p,
                        class_targets=True, ignore_index=IGNORE_INDEX)

