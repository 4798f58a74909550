"""TRAK's LDS over k x ridge, re-solved from members already in a store (no new serving).

    python benchmarks/lds_vs_k_ridge.py --setting digits-mlp --store runs/defaults/digits_store
    python benchmarks/lds_vs_k_ridge.py --setting mnist-mlp --data-dir ../shared/data/mnist \
        --store runs/fvd/mnist/store --ks 128,256,512,1024,2048 --ensembles 'naive:I=1'

For each k in ``--ks`` and each ensemble, the configuration's dense TRAK members (as
``benchmarks/lds_vs_k.py`` stores them, ridge None) are read from the store: their stored
projected features Phi (n x k) and phi (m x k), the Q values and the LDS models. Each
member's block phi (Phi^T Phi + lambda I)^-1 Phi^T is then recomputed for every ridge in
the grid from one eigendecomposition (of the k x k kernel when n >= k, of the n x n Gram
Phi Phi^T when n < k: the same block), and scored with the setting's LDS exactly as a
sweep scores it (mean block times mean Q, Spearman per test row against the LDS models).

The ridge is given relative to the kernel: lambda = c * tr(Phi^T Phi) / min(n, k), the
mean of its nonzero eigenvalues (the Gram and the kernel share their trace). c = 0 is
TRAK's own (the automatic 1e-5 x tr / k where the kernel is singular). A configuration
whose members are not all in the store is skipped with a line saying so.

``--from-k K``: only members stored at k = K are read, and each k in ``--ks`` (<= K) uses
their first k columns. TRAK's projection has iid N(0, 1/K) entries
(:mod:`raytda.core.projection`), so its first k columns are a k-column Gaussian projection
scaled by sqrt(k / K), a scale the relative ridge cancels: the same distribution as the
members TRAK would serve at k (not the same draws), with no new serving.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from raytda import LDSSpec, Sweep
from raytda.core.lds import spearman_columns, summarize
from raytda.core.trak import AUTO_RIDGE, unpack_features
from raytda.methods import Method
from raytda.work.evaluate import ground_truth

from common import setting_overrides


def member_eig(payload: dict[str, torch.Tensor], columns: int | None = None):
    """(eigenvalues s (r,), test side A (m x r), train side B (n x r)) with the block
    phi (Phi^T Phi + lambda I)^-1 Phi^T = A diag(1 / (s + lambda)) B^T for every lambda.
    ``columns``: use only the first this many projected columns (``--from-k``)."""
    train = unpack_features(payload["train_features"], payload.get("train_scale"))
    test = unpack_features(payload["test_features"], payload.get("test_scale"))
    if columns is not None:
        train, test = train[:, :columns], test[:, :columns]
    n, k = train.shape
    if n >= k:  # kernel K = Phi^T Phi = V diag(s) V^T: A = phi V, B = Phi V
        s, v = torch.linalg.eigh(train.T @ train)
        return s, test @ v, train @ v
    # Gram G = Phi Phi^T = U diag(s) U^T: phi Phi^T (G + l I)^-1 = (phi Phi^T U) diag(.) U^T
    s, u = torch.linalg.eigh(train @ train.T)
    return s, test @ train.T @ u, u


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="digits-mlp")
    p.add_argument("--data-dir")
    p.add_argument("--store", required=True)
    p.add_argument("--ks", default="16,32,64,128,256,512,1024,2048")
    p.add_argument("--ensembles", default="naive:I=1;dropout:I=1,D=10")
    p.add_argument("--ridges", default="0,1e-3,1e-2,3e-2,0.1,0.3,1,3,10",
                   help="c in lambda = c * tr(K) / min(n, k)")
    p.add_argument("--lds-m", type=int, default=50)
    p.add_argument("--n-train", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    p.add_argument("--json", help="also write the rows here (one JSON list)")
    p.add_argument("--stored-ridge-scale", type=float, default=0.0,
                   help="the ridge scale the stored members were served with (their keys)")
    p.add_argument("--from-k", type=int,
                   help="read members stored at this k only; each k in --ks uses their "
                        "first k columns (module docstring)")
    a = p.parse_args()
    t0 = time.time()
    ks = [int(k) for k in a.ks.split(",")]
    if a.from_k is not None and max(ks) > a.from_k:
        p.error(f"--ks {max(ks)} exceeds --from-k {a.from_k}")
    stored_ks = ks if a.from_k is None else [a.from_k]
    cs = [float(c) for c in a.ridges.split(",")]
    ensembles = [e.strip() for e in a.ensembles.split(";") if e.strip()]
    overrides = setting_overrides(a.n_train, a.set)
    # --stored-ridge-scale (0: the members as stored by lds_vs_k.py, TRAK's own ridge) only
    # finds the members' keys: their features are the same at any ridge, re-solved here
    sweep = Sweep(a.setting, [Method("trak", proj_dim=k, features="dense",
                                     ridge_scale=a.stored_ridge_scale)
                              for k in stored_ks],
                  ensembles, lds=LDSSpec(m=a.lds_m), store=a.store, data_dir=a.data_dir,
                  progress=False, **overrides)
    store = sweep.store
    rows = []
    truth = None
    for job in sweep.spec.evaluations():
        needs = job.needs
        parts = [q.key for q in needs.parts()]
        qkeys = [q.stored_key(store) for q in needs.q]
        if not all(store.has(k) for k in parts + qkeys):
            print(f"skip {job.ensemble.label} k={job.method.proj_dim}: members not stored")
            continue
        if truth is None:
            data = job.task.data()
            n, m = data.n_train, data.n_test
            truth = ground_truth(job, store, n, m)
            target = truth[1].mean(1)
        q_mean = torch.stack([store.get(k)[0]["q"].double() for k in qkeys]).mean(0)
        payloads = [store.get(key)[0] for key in parts]
        # one stored k, or (--from-k) every k of --ks cut from the members stored at K
        for k in [job.method.proj_dim] if a.from_k is None else ks:
            columns = None if a.from_k is None else k
            eigs = [member_eig(payload, columns) for payload in payloads]
            for c in cs:
                acc = torch.zeros(m, n, dtype=torch.float64)
                for s, A, B in eigs:
                    trace = float(s.sum())
                    if c > 0:
                        lam = c * trace / min(n, k)
                    else:  # TRAK's own: none unless singular (n < k or a zero eigenvalue)
                        lam = AUTO_RIDGE * trace / k if n < k or float(s.min()) <= 0 else 0.0
                    acc += (A / (s + lam)) @ B.T
                scores = acc / len(eigs) * q_mean.unsqueeze(0)
                predicted = truth[0].astype(np.float64) @ scores.numpy().T
                res = summarize(spearman_columns(target, predicted))
                row = {"ensemble": job.ensemble.label, "k": k, "c": c, "lds": res.mean,
                       "se": res.se, "n": n}
                rows.append(row)
                print(f"| {row['ensemble']} | {k} | {c:g} | {res.mean:.3f} | {res.se:.3f} |",
                      flush=True)
    print(f"setting {a.setting} {overrides or ''}, n_train {n}, LDS m={a.lds_m}, "
          f"{len(rows)} rows in {time.time() - t0:.0f} s")
    # one grid per ensemble: rows k, columns c
    for ens in dict.fromkeys(r["ensemble"] for r in rows):
        print(f"\n{ens}: LDS (se) by k (rows) and c (columns), lambda = c tr(K)/min(n,k)")
        print("| k | " + " | ".join(f"c={c:g}" for c in cs) + " |")
        print("|---" * (len(cs) + 1) + "|")
        for k in ks:
            cells = {r["c"]: r for r in rows if r["ensemble"] == ens and r["k"] == k}
            if cells:
                print(f"| {k} | " + " | ".join(
                    f"{cells[c]['lds']:.3f} ({cells[c]['se']:.3f})" for c in cs) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f)


if __name__ == "__main__":
    main()
