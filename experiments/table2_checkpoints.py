"""Reproduce the paper's Table 2 (appendix F.2): intermediate checkpoints as members.

One training run (I = 1) of MNIST-MLP keeps evenly spaced checkpoints; the ensemble's
members are its last C checkpoints (naive, no dropout) or those checkpoints with D
dropout masks each. TRAK, LDS; the paper's numbers beside ours.

CPU scale (default; D = 10 only, see the results file)::

    python experiments/table2_checkpoints.py --data-root /work/shared/data

Paper scale::

    python experiments/table2_checkpoints.py --full --D 10,25
"""

from __future__ import annotations

import sys

import common

PROG = "table2_checkpoints.py"
#: Table 2 of the paper (MNIST-MLP, TRAK, I = 1): (kind, D) -> {#ckpts: LDS}
PAPER = {("checkpoints", None): {1: 0.122, 3: 0.170, 5: 0.188},
         ("checkpoints-dropout", 10): {1: 0.249, 3: 0.318, 5: 0.342},
         ("checkpoints-dropout", 25): {1: 0.316, 3: 0.359, 5: 0.373}}
C_VALUES = (1, 3, 5)


def paper_value(r, c: int) -> float | None:
    d = None if r.ensemble == "checkpoints" else int(r.D)
    return PAPER.get((r.ensemble, d), {}).get(c)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, ["mnist-mlp"])
    p.add_argument("--D", default="10", help="dropout-masked passes per checkpoint (paper: 10, 25)")
    a = common.parse(p, argv)
    if common.resolve(a, PROG) or common.check_notes(a, PROG):
        return 2
    d_values = common.int_list(a.D)
    ensembles = [f"checkpoints:I=1,C={c}" for c in C_VALUES]
    ensembles += [f"checkpoints-dropout:I=1,C={c},D={d}" for d in d_values for c in C_VALUES]
    tasks = [common.task_for(s, a) for s in common.settings_of(a)]
    n_saved = min(len(t.saved_epochs()) for t in tasks)
    if n_saved < max(C_VALUES):
        print(f"{PROG}: error: the recipe keeps {n_saved} checkpoints, {max(C_VALUES)} needed",
              file=sys.stderr)
        return 2
    outcome = common.run_sweep(a, tasks, ensembles)
    if outcome is None:
        return 1
    df = outcome.df
    epochs = {t.name: [e or t.recipe.epochs for e in t.saved_epochs()] for t in tasks}
    lines = common.header("Table 2: intermediate checkpoints with and without dropout (TRAK, I = 1)",
                          PROG, a, outcome)
    lines += [f"Checkpoints kept (epochs): {epochs}; C = 1 is the final model, C = 3 and 5 add the "
              f"latest earlier ones.", "", "LDS by #checkpoints C, measured ± se (paper):", "",
              *common.grid_lines(df, "C", list(C_VALUES), paper_value), "",
              "Costs (measured, as if run alone):", "",
              *common.md_table(["configuration", "LDS", "train s", "serve s", "params"],
                               ([r.label, common.lds_cell(r), f"{r.train_time_s:.1f}",
                                 f"{r.serve_time_s:.1f}", f"{r.params:,}"]
                                for r in df.sort_values(["ensemble", "D", "C"]).itertuples()))]
    common.save(a, "table2_checkpoints", lines, df, {"seconds": outcome.seconds})
    common.plot_grid(a, "table2_checkpoints", df, "setting", "C", "checkpoints C (I = 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
