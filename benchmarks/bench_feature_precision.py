"""TRAK scores from float16-stored features against float32 ones, on the same members,
and what that can change in LDS whatever the ground truth.

One model is trained (on a half subset, as a sweep's members are) and featurized once
per member: the unmasked member and D dropout-masked ones, each with its own projection.
From the same features, TRAK scores come once with float32 features (``pack=False``) and
once as raytda stores them (float16 with a power-of-two scale), for the naive member and
for the Dropout Ensemble (mean of the D masked members, times mean Q).

LDS is the mean over test rows of the Spearman correlation, over the m LDS subsets,
between predicted margins (a subset's summed scores) and the retrained models' margins.
It changes only through the ranking of the m predictions of each test row; if the two
precisions rank them alike, LDS is identical for any ground truth. Otherwise each
adjacent swap between the two rankings (a discordant pair) moves that row's Spearman by
at most 12 / (m^2 - 1) (a swap changes the squared rank differences by at most 2m), so
``lds_bound`` = mean over rows of discordant pairs x 12 / (m^2 - 1) bounds the change of
LDS without training the ground truth.

    python benchmarks/bench_feature_precision.py --setting mnist-mlp \
        --data-dir /work/shared/data/mnist --D 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from raytda.core.args import ComputeArgs
from raytda.core.grads import forward_outputs, n_params
from raytda.core.lds import lds_subsets
from raytda.core.masks import MaskSpec
from raytda.core.projection import GaussianProjector
from raytda.core.train import half_subset, load_weights
from raytda.core.trak import trak_scores
from raytda.methods.trak import TRAK, kernel_payload, trak_features
from raytda.specs import LDSSpec
from raytda.tasks import get_task
from raytda.work.train import FINAL, fit_task

from common import log, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="mnist-mlp")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--D", type=int, default=10, help="dropout-masked members")
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--lds-m", type=int, default=50, help="LDS subsets (Table 1: 50)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def discordant_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """Pairs ranked one way by ``a`` and the other by ``b`` (ties in either: not counted
    as discordant, and there are none among continuous predictions)."""
    m = len(a)
    tau = kendalltau(a, b).statistic
    return int(round((1 - tau) / 2 * m * (m - 1) / 2))


def compare(full: torch.Tensor, half: torch.Tensor, members: np.ndarray) -> dict[str, float]:
    """How far ``half`` scores are from ``full`` ones, and the LDS change bound."""
    err = float((half.double() - full.double()).abs().max() / full.double().abs().max())
    rho = [spearmanr(half[i], full[i]).statistic for i in range(full.shape[0])]
    pred_full = members.astype(np.float64) @ full.double().numpy().T  # (m, n_test)
    pred_half = members.astype(np.float64) @ half.double().numpy().T
    m = members.shape[0]
    swaps = np.array([discordant_pairs(pred_full[:, j], pred_half[:, j])
                      for j in range(pred_full.shape[1])])
    return {"max_rel_err": err, "min_row_spearman": float(min(rho)),
            "rows_reordered": int((swaps > 0).sum()), "n_test": int(full.shape[0]),
            "lds_bound": float(swaps.mean() * 12.0 / (m * m - 1))}


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    t0 = time.perf_counter()
    task = get_task(a.setting, a.data_dir)
    data = task.data()
    args = ComputeArgs()
    rows = half_subset(data.n_train, a.seed)
    states, train = fit_task(task, data.train.subset(rows), a.seed, args)
    x, y = data.train.tensors()
    net = load_weights(task.build_model(), states[FINAL], x[:1]).eval()
    log(f"trained {a.setting} on {len(rows)} rows in {train['train_time_s']:.0f} CPU or device s")
    rate = float(task.settings["dropout"])
    members = [None] + [MaskSpec(seed=1000 + d, rate=rate) for d in range(a.D)]
    blocks: dict[str, list[torch.Tensor]] = {"float32": [], "float16": []}
    qs = []
    for e, mask in enumerate(members):
        proj = GaussianProjector(n_params(net), a.proj_dim, a.seed * 100 + e)
        full, _ = trak_features(net, data, proj, mask, None, args, pack=False)
        packed, _ = kernel_payload(full["train_features"], full["test_features"], None)
        blocks["float32"].append(TRAK().score_rows(full, slice(None)))
        blocks["float16"].append(TRAK().score_rows(packed, slice(None)))
        qs.append(forward_outputs(net, x, y, mask, "train")[1])
        log(f"member {e} of {len(members)} featurized and scored")
    subsets = lds_subsets(data.n_train, LDSSpec(m=a.lds_m))
    results = []
    for label, picked in (("naive I=1", [0]), (f"dropout I=1 D={a.D}", range(1, len(members)))):
        scores = {p: trak_scores([qs[i] for i in picked], [blocks[p][i] for i in picked])
                  for p in blocks}
        results.append((label, compare(scores["float32"], scores["float16"], subsets)))
    print(table(["configuration", "max rel err", "min row Spearman", "rows reordered",
                 "LDS change bound"],
                [(label, f"{r['max_rel_err']:.2e}", f"{r['min_row_spearman']:.6f}",
                  f"{r['rows_reordered']} of {r['n_test']}", f"{r['lds_bound']:.2e}")
                 for label, r in results]))
    print(f"{a.setting}: n_train {data.n_train}, n_test {data.n_test}, k {a.proj_dim}, "
          f"LDS m {a.lds_m}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
