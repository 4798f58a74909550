"""Reproduce the paper's Table 1 (appendix F.1) on MNIST-MLP with TRAK.

Naive independent ensembles (I = 1, 3, 5), Dropout Ensemble (D = 10, 25) and the
"only random projection" ablation (D projection passes, dropout off), each scored by LDS
against 50 retrained models; writes the measured table beside the paper's numbers, the
ratios to naive, the ground-truth noise ceiling and the run time.

The main table follows the paper's protocol: one retrained model per LDS subset. With
``--lds-replicates R >= 2`` (default 2) the same store also holds R models per subset; a
side table scores the same ensemble scores against their average, beside the noise
ceiling (the Spearman of a second model per subset against the first), never in place of
the main table. Both come from one store: LDS model replicate 0 is the main ground truth,
replicates 0..R-1 averaged the side one, so the side table costs only R - 1 more
trainings per subset and no serving.

The MNIST directory (the four IDX files) is ``--data-dir``, else ``$RAYTDA_DATA/mnist``, else
``~/raytda-data/mnist`` (never relative to this file, which ``ray submit`` copies elsewhere).
The device is ``--device auto`` (CUDA when this process sees it), ``cpu`` or ``cuda``.

Local::

    python experiments/table1_mnist.py --data-dir ../shared/data/mnist

On a cluster started from ``clusters/aws.yaml`` (which ships ``~/raytda-data`` to every node;
arguments after ``--``; the head has no GPU, so ask for CUDA explicitly)::

    ray submit clusters/aws.yaml experiments/table1_mnist.py -- \
        --executor ray --device cuda --store s3://BUCKET/raytda/table1/store
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAPER = {  # Table 1 of the paper, MNIST + MLP, TRAK, LDS
    ("naive", None): {1: 0.122, 3: 0.217, 5: 0.275},
    ("dropout", 10): {1: 0.249, 3: 0.399, 5: 0.457},
    ("projection-only", 10): {1: 0.210, 3: 0.335, 5: 0.398},
    ("dropout", 25): {1: 0.316, 3: 0.458, 5: 0.502},
    ("projection-only", 25): {1: 0.217, 3: 0.351, 5: 0.413},
}
ROW_NAMES = {"naive": "Naive independent", "dropout": "Dropout Ensemble",
             "projection-only": "Only random projection"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None,
                   help="MNIST IDX files (default: $RAYTDA_DATA/mnist, else ~/raytda-data/mnist)")
    p.add_argument("--out", default=str(HERE / "results"), help="where the table is written")
    p.add_argument("--store", default="runs/table1_mnist/store", help="artifact store path/URI")
    p.add_argument("--I", default="1,3,5")
    p.add_argument("--D", default="10,25")
    p.add_argument("--lds-m", type=int, default=50)
    p.add_argument("--lds-replicates", type=int, default=2,
                   help="models per LDS subset for the side table (averaged ground truth) "
                        "and the noise ceiling; the main table always uses one (the paper's)")
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=None, help="override the 100-epoch recipe")
    p.add_argument("--n-train", type=int, default=5000, help="train samples (the paper's 5000)")
    p.add_argument("--n-test", type=int, default=500, help="test samples (the paper's 500)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None)
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when this process sees it), cpu, cuda or cuda:N")
    p.add_argument("--no-ablation", action="store_true", help="skip 'only random projection'")
    p.add_argument("--cached-only", action="store_true",
                   help="compute nothing: write the table from the configurations already in the store")
    p.add_argument("--notes", default=None,
                   help="a markdown file appended to the table (how the run went, what differs)")
    return p.parse_args(argv)


def build(a: argparse.Namespace, ensembles=None, replicates: int = 1):
    """The Table 1 sweep: one model per LDS subset unless ``replicates`` says otherwise.

    ``ensembles`` defaults to the table's configurations."""
    from raytda import ComputeArgs, LDSSpec, Sweep
    from raytda.ensembles import Ensemble

    if ensembles is None:
        i_values = [int(v) for v in a.I.split(",")]
        d_values = [int(v) for v in a.D.split(",")]
        kinds = ["dropout"] + ([] if a.no_ablation else ["projection-only"])
        ensembles = [Ensemble("naive", i) for i in i_values]
        ensembles += [Ensemble(k, i, d) for d in d_values for k in kinds for i in i_values]
    overrides = {"n_train": a.n_train, "n_test": a.n_test}
    if a.epochs is not None:
        overrides["epochs"] = a.epochs
    return Sweep("mnist-mlp", "trak", ensembles,
                 lds=LDSSpec(m=a.lds_m, models_per_subset=replicates),
                 store=a.store, data_dir=a.data_dir, proj_dim=a.proj_dim,
                 executor=a.executor, address=a.address,
                 compute=ComputeArgs(device=a.device), **overrides)


def build_truth(a: argparse.Namespace):
    """A one-configuration sweep whose ground truth has ``--lds-replicates`` models per
    subset: running it trains replicates 1..R-1 (replicate 0 and the configuration's
    member artifacts are the main sweep's, shared through the store)."""
    from raytda.ensembles import Ensemble

    first = int(a.I.split(",")[0])
    return build(a, [Ensemble("naive", first)], a.lds_replicates)


def side_table(sweep, truth_sweep, df) -> tuple[dict[str, tuple[float, float]], float] | None:
    """label -> (LDS, se) of each main configuration's stored scores against the ground
    truth averaged over the replicates, and the noise ceiling; None when the store lacks
    some replicate model (e.g. --cached-only before a full run)."""
    import numpy as np

    from raytda.core.lds import spearman_columns, summarize
    from raytda.work.evaluate import ground_truth

    ev_truth = truth_sweep.spec.evaluations()[0]
    if not all(sweep.store.has(lm.key) for lm in ev_truth.lds_models()):
        return None
    data = ev_truth.task.data()
    membership, truth = ground_truth(ev_truth, sweep.store, data.n_train, data.n_test)
    averaged = truth.mean(1)
    out = {}
    for ev in sweep.spec.evaluations():
        if ev.ensemble.label not in set(df.label) or not sweep.store.has(ev.key):
            continue
        predicted = np.zeros((membership.shape[0], data.n_test))
        for rows, scores in sweep.iter_scores(ev.ensemble):
            predicted[:, rows] = membership.astype(np.float64) @ scores.double().numpy().T
        res = summarize(spearman_columns(averaged, predicted))
        out[ev.ensemble.label] = (res.mean, res.se)
    ceiling = summarize(spearman_columns(truth[:, 0], truth[:, 1])).mean
    return out, ceiling


def recorded_compute(sweep) -> dict[str, tuple[int, float]]:
    """job kind -> (jobs, seconds) as measured when each artifact was made (any session)."""
    from raytda.plan.planner import make_plan

    out: dict[str, tuple[int, float]] = {}
    for job in make_plan(sweep.spec).jobs:  # the whole graph, not only what is missing
        if job.kind == "result":  # its costs are sums over the jobs below, not its own time
            continue
        meta = sweep.store.meta(job.key) if sweep.store.has(job.key) else None
        if not meta:
            continue
        t = float(meta.get("train_time_s", 0.0) if job.kind in ("model", "ldsmodel")
                  else meta.get("serve_time_s", 0.0))
        n, total = out.get(job.kind, (0, 0.0))
        out[job.kind] = (n + 1, total + t)
    return out


def _paper(v: float | None, unit: str = "", digits: int = 3) -> str:
    """A paper number, or 'no paper number' for configurations the paper does not report."""
    return "no paper number" if v is None or v != v else f"{v:.{digits}f}{unit}"


def _grid(rows: dict, df, i_values: list[int], cell) -> list[str]:
    """A markdown table: one line per (kind, D) of ``rows`` that ``df`` has, one column per
    I; ``cell(row or None, i, paper numbers of the line)`` writes each cell."""
    out = ["| ensemble | D | " + " | ".join(f"I = {i}" for i in i_values) + " |",
           "|---|---|" + "---|" * len(i_values)]
    for (kind, d), paper in rows.items():
        sub = df[(df.ensemble == kind) & ((df.D == d) if d else True)]
        if sub.empty:
            continue
        cells = [cell(next(r.itertuples()) if not (r := sub[sub.I == i]).empty else None, i, paper)
                 for i in i_values]
        out.append(f"| {ROW_NAMES[kind]} | {d or 'n/a'} | " + " | ".join(cells) + " |")
    return out


def render(df, a: argparse.Namespace, seconds: float,
           compute: dict[str, tuple[int, float]] | None = None,
           side: tuple[dict[str, tuple[float, float]], float] | None = None) -> str:
    i_values = sorted(df["I"].unique())
    naive = {r.I: r.lds for r in df[df.ensemble == "naive"].itertuples()}
    # The paper's rows, then any other D this run measured (without paper numbers).
    rows = dict(PAPER)
    for d in sorted(int(v) for v in df[df.ensemble != "naive"].D.unique()):
        for kind in ROW_NAMES:
            if kind != "naive":
                rows.setdefault((kind, d), {})
    lines = [
        "# Table 1 on MNIST-MLP (TRAK), measured by raytda",
        "",
        f"Command: `python experiments/table1_mnist.py {' '.join(sys.argv[1:])}`",
        ("Rendered from the store (--cached-only): nothing was computed by this command."
         if a.cached_only else
         f"Run time: {seconds / 60:.1f} min on {platform.node() or 'this machine'} "
         f"({platform.processor() or platform.machine()}, device {a.device}); "
         f"cached artifacts are not recomputed, so a rerun's time is not a full run's."),
        *([] if not compute else [
            "Compute recorded in the store (each artifact's own measured time, whatever run "
            "made it): " + ", ".join(f"{kind} {n} jobs {t / 60:.1f} min"
                                     for kind, (n, t) in sorted(compute.items()))
            + f"; total {sum(t for _, t in compute.values()) / 60:.1f} min."]),
        f"Setting: {a.n_train} train / {a.n_test} test, inputs normalized as dattri's benchmark "
        f"(mean 0.1307, std 0.3081), MLP 784-128-64-10, dropout 0.1, SGD lr 0.01 mom 0.9 "
        f"batch 64, {a.epochs or 100} epochs; k = {a.proj_dim}; LDS over {a.lds_m} subsets "
        f"(alpha 0.5), one retrained model per subset (the paper's protocol).",
        "",
        "LDS, measured (paper) ± standard error over test samples, one model per LDS subset:",
        "",
        *_grid(rows, df, i_values, lambda r, i, paper: "–" if r is None else
               f"{r.lds:.3f} ± {r.lds_se:.3f} ({_paper(paper.get(i))})"),
    ]

    def ratio(r, i, paper):
        p = paper.get(i, float("nan")) / PAPER[("naive", None)].get(i, float("nan"))
        return ("–" if r is None or i not in naive else
                f"{r.lds / naive[i]:.2f}x ({_paper(p, 'x', 2)})")

    lines += ["", "Ratio to naive at the same I, measured (paper):", "",
              *_grid({k: v for k, v in rows.items() if k[0] != "naive"}, df, i_values, ratio)]
    if side is not None:
        by_label, ceiling = side

        def averaged(r, i, paper):
            got = None if r is None else by_label.get(r.label)
            return "–" if got is None else f"{got[0]:.3f} ± {got[1]:.3f} ({r.lds:.3f})"

        lines += ["", f"Beside it, not instead of it: the same scores against the ground truth "
                      f"averaged over {a.lds_replicates} models per LDS subset, measured ± "
                      f"standard error (one model per subset, from the table above):", "",
                  *_grid(rows, df, i_values, averaged)]
        lines += ["", f"Ground-truth noise ceiling (Spearman of a second model per LDS subset "
                      f"against the first, mean over test samples): {ceiling:.3f}."]
    elif a.lds_replicates >= 2:
        lines += ["", "(No averaged-ground-truth table: the store lacks some of the "
                      f"{a.lds_replicates} models per LDS subset; run without --cached-only.)"]
    lines += ["", "Costs per configuration (measured, each as if run alone):", "",
              "| configuration | LDS | train s | serve s | params | peak MiB |", "|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.label} | {r.lds:.3f} | {r.train_time_s:.1f} | {r.serve_time_s:.1f} | "
                     f"{r.params} | {r.peak_mem_bytes / 2**20:.0f} |")
    return "\n".join(lines) + "\n"


def resolve(a: argparse.Namespace) -> None:
    """Replace the data directory and device flags by what they resolve to (so the table
    and the JSON record what was used); raises DataError / SpecError with one line."""
    from raytda.data.location import data_dir
    from raytda.run.device import resolve_device

    a.data_dir = str(data_dir("mnist", a.data_dir))
    # With --executor ray the jobs run on the cluster's nodes, not in this process.
    a.device = resolve_device(a.device, on_cluster=a.executor == "ray")


def main(argv: list[str] | None = None) -> int:
    from raytda.data import DataError
    from raytda.specs import SpecError

    a = parse_args(argv)
    try:
        resolve(a)
    except (DataError, SpecError) as e:  # a bad flag: one line, before any work
        print(f"table1_mnist.py: error: {e}", file=sys.stderr)
        return 2
    notes = Path(a.notes).read_text() if a.notes else ""  # read now: a bad path fails before work
    sweep = build(a)
    truth = build_truth(a) if a.lds_replicates >= 2 else None
    plan = sweep.plan()
    print(plan.summary(), flush=True)
    t0 = time.perf_counter()
    df = sweep.cached(plan=plan) if a.cached_only else sweep.run()
    if df is None:
        print("no finished configuration in the store yet", file=sys.stderr)
        return 1
    if truth is not None and not a.cached_only:
        truth.run()  # the extra LDS replicates; everything else is shared
    side = None if truth is None else side_table(sweep, truth, df)
    seconds = time.perf_counter() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "table1_mnist.parquet", index=False)
    compute = recorded_compute(sweep)
    if truth is not None:  # the extra LDS replicates are part of what this table cost
        extra = [lm for lm in truth.spec.evaluations()[0].lds_models()
                 if lm.replicate and sweep.store.has(lm.key)]
        n, t = compute.get("ldsmodel", (0, 0.0))
        compute["ldsmodel"] = (n + len(extra), t + sum(
            float(sweep.store.meta(lm.key).get("train_time_s", 0.0)) for lm in extra))
    text = render(df, a, seconds, compute, side)
    if notes:
        text += "\n" + notes
    (out / "table1_mnist.md").write_text(text)
    (out / "table1_mnist.json").write_text(json.dumps({"seconds": seconds, "args": vars(a)}, indent=1))
    sweep.plot(out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
