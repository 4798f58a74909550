"""LDS of factorized against dense gradient features at the same total k, same members.

    python benchmarks/lds_factorized_vs_dense.py --setting mnist-mlp \
        --data-dir ../shared/data/mnist --store runs/fvd/store

The paper's protocol on the setting (its LDS spec, m = 50 subsets of half the train set)
for naive I=1, naive I=3 and Dropout I=1 D=10 with TRAK at k = 2048, once with dense
features and once with factorized ones: the models, LDS models and Q are shared, only the
features (and so the member payloads) differ. Prints one row per configuration.

``--features dense,factorized,sketch`` sets which gradient-features parts get rows
(every part at ``--proj-dim``; dense is the reference each other part's gap is measured
against). After the table it prints, per part, the gap to dense in combined standard
errors and the Dropout I=1 D=10 gain over naive I=1 (LDS ratio) beside dense's.

A part may carry options (``dense:draw=1`` scores the same members through another
draw of the dense projection; ``raytda.features.base.Redrawable``), which measures how
far two draws of one kind of features land apart. ``--ensembles`` narrows the rows (the
Dropout gain needs only naive I=1 and Dropout I=1 D=10).

``--factorized-k 2048,4096`` adds factorized rows at other total dims (same members) and
``--proj-dim`` sets the dense rows' k: the factorized side serves about 10x faster at equal
k, so a larger factorized k is the second comparison to make (on MNIST-MLP it does not
help: benchmarks/results/lds_factorized_vs_dense_mnist.md).
"""

from __future__ import annotations

import argparse
import time

from raytda import LDSSpec, Sweep
from raytda.features import features_from
from raytda.methods import Method

ENSEMBLES = ["naive:I=1", "naive:I=3", "dropout:I=1,D=10"]
COLUMNS = ["features", "label", "lds", "lds_se", "train_time_s", "serve_time_s", "n_members",
           "features_uncovered"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="mnist-mlp")
    p.add_argument("--data-dir")
    p.add_argument("--store", default="runs/lds_factorized_vs_dense/store")
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--lds-m", type=int, default=50)
    p.add_argument("--factorized-k", default=None,
                   help="comma-separated total dims of the factorized rows (default: --proj-dim)")
    p.add_argument("--features", default="dense,factorized",
                   help="semicolon- or comma-separated gradient-features parts, each at "
                        "--proj-dim (the first is the reference; options after ':', "
                        "e.g. 'dense;dense:draw=1')")
    p.add_argument("--ensembles", default=";".join(ENSEMBLES),
                   help="semicolon-separated ensembles (default: %(default)s)")
    a = p.parse_args()
    t0 = time.time()
    sep = ";" if ";" in a.features else ","
    parts = [features_from(f.strip()).spec_string() for f in a.features.split(sep) if f.strip()]
    ensembles = [e.strip() for e in a.ensembles.split(";") if e.strip()]
    dims = [int(k) for k in a.factorized_k.split(",")] if a.factorized_k else []
    methods = [*(Method("trak", proj_dim=a.proj_dim, features=f) for f in parts),
               *(Method("trak", proj_dim=k, features="factorized") for k in dims
                 if not (k == a.proj_dim and "factorized:uncovered=dense" in parts))]
    sweep = Sweep(a.setting, methods, ensembles, lds=LDSSpec(m=a.lds_m), store=a.store,
                  data_dir=a.data_dir)
    table = sweep.run()
    print(table[["method_label", *COLUMNS[1:]]].to_string(index=False))
    summary(table, parts[0])
    print(f"{len(table)} configurations in {time.time() - t0:.0f} s")


def summary(table, reference: str) -> None:
    """Per method: gap to the reference features' rows (in combined se) per ensemble and
    the Dropout gain."""
    import math

    rows = {(r["method_label"], r["label"]): r for _, r in table.iterrows()}
    ref_label = next(r["method_label"] for _, r in table.iterrows()
                     if r["features"] == reference and r["proj_dim"] == table["proj_dim"].iloc[0])
    is_dense = lambda m: m == ref_label  # noqa: E731
    dense = {e: r for (m, e), r in rows.items() if is_dense(m)}
    def gain(rows_of: dict) -> tuple[float, float]:
        """Dropout I=1 D=10 LDS over naive I=1 LDS, and its se (delta method)."""
        d, n = rows_of.get("dropout I=1 D=10"), rows_of.get("naive I=1")
        if d is None or n is None:
            return math.nan, math.nan
        r = d["lds"] / n["lds"]
        return r, abs(r) * math.hypot(d["lds_se"] / d["lds"], n["lds_se"] / n["lds"])

    dense_gain = gain(dense)
    for method in dict.fromkeys(m for m, _ in rows):
        if is_dense(method):
            continue
        mine = {e: r for (m, e), r in rows.items() if m == method}
        gaps = []
        for e, r in ((e, r) for (m, e), r in rows.items() if m == method):
            if e in dense:
                se = math.hypot(dense[e]["lds_se"], r["lds_se"])
                gaps.append(f"{e}: {(dense[e]['lds'] - r['lds']) / se:+.1f} se")
        g = gain(mine)
        print(f"{method}: gap to dense {'; '.join(gaps)}; Dropout D=10 gain over naive I=1 "
              f"{g[0]:.2f}x ± {g[1]:.2f} (dense {dense_gain[0]:.2f}x ± {dense_gain[1]:.2f}; "
              f"ratio {g[0] / dense_gain[0]:.2f})")


if __name__ == "__main__":
    main()
