"""Linear datamodeling score (appendix D): Spearman between retrained outputs and
attribution-based predictions over m random subsets, per test sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from raytda.specs import LDSSpec


def lds_subsets(n: int, spec: LDSSpec) -> np.ndarray:
    """(m, n) boolean membership of the m subsets of size round(alpha * n)."""
    rng = np.random.default_rng(spec.seed)
    size = int(round(spec.alpha * n))
    out = np.zeros((spec.m, n), dtype=bool)
    for j in range(spec.m):
        out[j, rng.choice(n, size=size, replace=False)] = True
    return out


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of a[:, t] with b[:, t] for every column t (NaN if constant)."""
    ra = rankdata(a, axis=0)
    rb = rankdata(b, axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    den = np.sqrt((ra * ra).sum(0) * (rb * rb).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(0) / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True)
class LDSResult:
    """Mean LDS over test samples, its standard error, and the per-sample values."""

    mean: float
    se: float
    per_sample: np.ndarray


def summarize(values: np.ndarray) -> LDSResult:
    ok = values[~np.isnan(values)]
    if len(ok) == 0:
        return LDSResult(float("nan"), float("nan"), values)
    se = float(ok.std(ddof=1) / np.sqrt(len(ok))) if len(ok) > 1 else float("nan")
    return LDSResult(float(ok.mean()), se, values)


def lds(scores: np.ndarray, subsets: np.ndarray, truth: np.ndarray) -> LDSResult:
    """scores (n_test, n_train); subsets (m, n_train) bool; truth (m, n_test) outputs f."""
    if scores.shape[1] != subsets.shape[1]:
        raise ValueError(f"scores cover {scores.shape[1]} train samples, subsets {subsets.shape[1]}")
    if truth.shape != (subsets.shape[0], scores.shape[0]):
        raise ValueError(f"truth must be (m, n_test) = {(subsets.shape[0], scores.shape[0])}, "
                         f"got {truth.shape}")
    predicted = subsets.astype(np.float64) @ scores.T.astype(np.float64)
    return summarize(spearman_columns(truth, predicted))
