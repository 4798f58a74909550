"""TRAK's LDS against the projection dimension k, same members for every k (one store).

    python benchmarks/lds_vs_k.py --setting digits-mlp --store runs/lds_vs_k/digits
    python benchmarks/lds_vs_k.py --setting mnist-mlp --data-dir ../shared/data/mnist \
        --store runs/fvd/mnist/store

The setting's LDS spec (the paper's protocol: m = 50 subsets of half the train set), dense
features, for each k in ``--ks`` and each ensemble in ``--ensembles`` (naive I=1 and
Dropout I=1 D=10 by default): the models, LDS models and Q are shared, only the member
payloads differ by k, so on a store that already holds a sweep of the setting only
serving at new k runs. Prints one markdown table: LDS +- se and serving time per row, the
k that the default rule (:mod:`raytda.methods.k_rule`) picks for this n marked.
"""

from __future__ import annotations

import argparse
import time

from raytda import LDSSpec, Sweep
from raytda.methods import Method
from raytda.methods.k_rule import PROJ_DIM_RULE

from common import setting_overrides


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="digits-mlp")
    p.add_argument("--data-dir")
    p.add_argument("--store", default="runs/lds_vs_k/store")
    p.add_argument("--ks", default="16,32,64,128,256,512,1024,2048",
                   help="comma-separated projection dimensions")
    p.add_argument("--ensembles", default="naive:I=1;dropout:I=1,D=10",
                   help="semicolon-separated ensembles")
    p.add_argument("--ridge-scale", type=float, default=0.0,
                   help="TRAK's ridge_scale (0: TRAK's own ridge, the members these tables "
                        "were stored with; benchmarks/lds_vs_k_ridge.py re-solves them at "
                        "other scales)")
    p.add_argument("--lds-m", type=int, default=50)
    p.add_argument("--n-train", type=int, help="override the setting's train size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override another setting, e.g. 'hidden=[512,256]' (repeatable)")
    a = p.parse_args()
    t0 = time.time()
    ks = [int(k) for k in a.ks.split(",")]
    ensembles = [e.strip() for e in a.ensembles.split(";") if e.strip()]
    overrides = setting_overrides(a.n_train, a.set)
    methods = [Method("trak", proj_dim=k, features="dense", ridge_scale=a.ridge_scale)
               for k in ks]
    sweep = Sweep(a.setting, methods,
                  ensembles, lds=LDSSpec(m=a.lds_m), store=a.store, data_dir=a.data_dir,
                  **overrides)
    table = sweep.run()
    n = int(table["n_train"].iloc[0])
    chosen = PROJ_DIM_RULE.choose(n)
    k_of = {m.label: m.proj_dim for m in methods}
    table["k"] = [k_of[label] for label in table["method_label"]]
    rows = ["| ensemble | k | LDS | se | serve_s | rule |", "|---|---|---|---|---|---|"]
    for ens in table["label"].unique():
        part = table[table["label"] == ens].sort_values("k")
        for r in part.itertuples():
            mark = "<- rule" if r.k == chosen else ""
            rows.append(f"| {ens} | {r.k} | {r.lds:.3f} | {r.lds_se:.3f} | "
                        f"{r.serve_time_s:.2f} | {mark} |")
    params = int(table["params"].iloc[0]) // max(1, int(table["I"].iloc[0]))
    print(f"setting {a.setting} {overrides or ''}, n_train {n}, n_test "
          f"{int(table['n_test'].iloc[0])}, {params:,} params, "
          f"LDS m={a.lds_m}; rule k = {chosen} ({PROJ_DIM_RULE.why(n)})")
    print("\n".join(rows))
    print(f"{len(table)} configurations in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
