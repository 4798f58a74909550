"""EK-FAC influence functions on the paper's Figure 6 protocol at CPU scale (MNIST-MLP).

    python benchmarks/ekfac_figure6.py --data-dir ../shared/data/mnist --store runs/ekfac/store

Rows: EK-FAC (``Method("ekfac")``: damping 1e-3 as IF's, true-Fisher curvature of the
Task's loss over each member's own training rows, factors fitted on the masked member)
for naive I=1, 3, 10 and Dropout I=1 D=10, LDS on the paper's spec (m = 50 subsets of half
the train set), with the results table's cost columns. ``--with-if`` adds the
Gauss-Newton CG IF (``Method("if")``) for the ensembles in ``--if-ensembles``.

Then, for Dropout I=1 D=10, the same members scored with factors fitted ONCE on the base
model (no mask) instead of on each masked member: the LDS that sharing one fit across the
D masks would give, against the per-member fits' (same members, same ground truth).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from raytda import ComputeArgs, LDSSpec, Sweep
from raytda.methods import Method

ENSEMBLES = ["naive:I=1", "naive:I=3", "naive:I=10", "dropout:I=1,D=10"]
COLUMNS = ["method_label", "label", "lds", "lds_se", "train_time_s", "serve_time_s",
           "n_members"]


def base_fit_lds(sweep: Sweep, ensemble: str, args: ComputeArgs) -> dict:
    """LDS of ``ensemble``'s EK-FAC scores with one factor fit on the base model (mask
    None) serving every masked member, and the time of that fit and of the scoring."""
    from raytda.core.ekfac import EKFAC
    from raytda.core.influence import curvature_rows
    from raytda.core.lds import spearman_columns, summarize
    from raytda.work.evaluate import ground_truth
    from raytda.work.serve import load_member, member_mask

    ev = sweep.evaluation(ensemble, method="ekfac")
    spec = ev.method
    blocks = ev.blocks()
    data = blocks[0].task.data()
    fit_s, score_s, total = 0.0, 0.0, None
    factors_by_model: dict[str, dict] = {}
    for b in blocks:
        net = load_member(sweep.store, b.model, b.member)
        mask = member_mask(net, b.model, b.member, b.mask_mode)
        ek = EKFAC(net, device=args.device)
        if b.model.key not in factors_by_model:  # one fit per trained model, unmasked
            rows = curvature_rows(data.n_train, b.model.training_rows(data.n_train),
                                  spec.hessian_samples)
            t = time.perf_counter()
            factors_by_model[b.model.key] = ek.fit(
                data.train.subset(rows), b.task.loss, mask=None, rows=rows,
                batch_size=args.grad_batch, fisher=spec.fisher)
            fit_s += time.perf_counter() - t
        t = time.perf_counter()
        s = ek.scores(factors_by_model[b.model.key], data.test, data.train, b.task.output(),
                      damping=spec.damping, mask=mask, batch_size=args.grad_batch).double()
        score_s += time.perf_counter() - t
        total = s if total is None else total + s
    scores = (total / len(blocks)).numpy()
    subsets, truth = ground_truth(ev, sweep.store, data.n_train, data.n_test)
    predicted = subsets.astype(np.float64) @ scores.T
    res = summarize(spearman_columns(truth.mean(1), predicted))
    return {"lds": res.mean, "lds_se": res.se, "fits": len(factors_by_model),
            "fit_s": fit_s, "score_s": score_s, "members": len(blocks)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="mnist-mlp")
    p.add_argument("--data-dir")
    p.add_argument("--store", default="runs/ekfac/store")
    p.add_argument("--lds-m", type=int, default=50)
    p.add_argument("--ensembles", nargs="+", default=ENSEMBLES)
    p.add_argument("--with-if", action="store_true")
    p.add_argument("--if-ensembles", nargs="+", default=["naive:I=1"])
    p.add_argument("--no-base-fit", action="store_true")
    a = p.parse_args()
    t0 = time.time()
    ensembles, if_ens = a.ensembles, a.if_ensembles
    sweep = Sweep(a.setting, Method("ekfac"), ensembles, lds=LDSSpec(m=a.lds_m), store=a.store,
                  data_dir=a.data_dir)
    table = sweep.run()
    rows = [table]
    if a.with_if:
        if_sweep = Sweep(a.setting, Method("if"), if_ens, lds=LDSSpec(m=a.lds_m),
                         store=a.store, data_dir=a.data_dir)
        rows.append(if_sweep.run())
    import pandas as pd

    df = pd.concat(rows, ignore_index=True)
    extra = [c for c in ("ekfac_uncovered", "if_converged", "if_cg_iterations") if c in df]
    with pd.option_context("display.width", 200):
        print(df[[*COLUMNS, *extra]].to_string(index=False))
    for ens in ensembles:  # what a member's fit and scoring took, from its metadata
        ev = sweep.evaluation(ens, method="ekfac")
        metas = [sweep.store.meta(b.key) for b in ev.blocks()]
        print(f"{ens}: per member ekfac_fit_s {np.mean([m['ekfac_fit_s'] for m in metas]):.2f}"
              f" ekfac_score_s {np.mean([m['ekfac_score_s'] for m in metas]):.2f}"
              f" (serve_time_s {np.mean([m['serve_time_s'] for m in metas]):.2f})")
    if not a.no_base_fit:
        for ens in (e for e in ensembles if e.startswith("dropout")):
            torch.manual_seed(0)
            r = base_fit_lds(sweep, ens, ComputeArgs())
            print(f"{ens}, factors fitted once on the base model: LDS {r['lds']:.4f} ± "
                  f"{r['lds_se']:.4f} ({r['fits']} fit(s) {r['fit_s']:.1f} s, scoring "
                  f"{r['members']} members {r['score_s']:.1f} s)")
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
