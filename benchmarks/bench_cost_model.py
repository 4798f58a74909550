"""The analytic cost model (paper appendix E) against the measured costs, per configuration.

The analytic serving time sums the measured unit costs of a configuration's members (one
feature pass, one Q pass, one projection build ...); the measured serving time adds the
aggregation step on top. Their ratio is a timing, so it is reported here, never asserted
in tests. One command, prints a table:

    python benchmarks/bench_cost_model.py [--setting toy-mlp] [--store DIR]
"""

from __future__ import annotations

import argparse
import tempfile

from raytda import LDSSpec, Sweep
from raytda.ensembles import Ensemble
from raytda.methods import Method

from common import log, table

ENSEMBLES = (Ensemble("naive", 1), Ensemble("naive", 2), Ensemble("dropout", 2, 3),
             Ensemble("dropout-forward", 2, 3), Ensemble("projection-only", 1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="toy-mlp")
    ap.add_argument("--proj-dim", type=int, default=8)
    ap.add_argument("--store", default=None, help="artifact store (default: a fresh temp dir)")
    a = ap.parse_args()
    store = a.store or tempfile.mkdtemp(prefix="raytda-bench-cost-")
    log(f"sweep {a.setting} into {store}")
    df = Sweep(a.setting, Method("trak", proj_dim=a.proj_dim), ENSEMBLES, lds=LDSSpec(m=6),
               store=store, progress=False).run()
    rows = []
    for r in df.itertuples():
        rows.append([r.label, f"{r.train_time_s:.4f}", f"{r.analytic_train_time_s:.4f}",
                     f"{r.serve_time_s:.4f}", f"{r.analytic_serve_time_s:.4f}",
                     f"{r.analytic_serve_time_s / r.serve_time_s:.2f}"])
    print(table(["configuration", "train s", "analytic train s", "serve s", "analytic serve s",
                 "analytic / measured serve"], rows))


if __name__ == "__main__":
    main()
