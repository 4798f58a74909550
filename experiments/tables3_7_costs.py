"""Reproduce the paper's cost tables 3 to 7 from stored results and the analytic model.

- Table 3 (appendix G): peak serving memory of the Dropout Ensemble and its forward-only
  variant at the largest I, by D, per setting: from figure1_dropout's results.
- Table 4 (appendix G): peak serving memory of naive ensembles and LoRA Ensembles on the
  Music Transformer: from figure3_lora's results.
- Table 5 (appendix H): stored parameters I x (parameters per model) for I = 1 ... 25,
  per setting, counted on the models themselves (paper scale and ours); dropout masks
  add nothing.
- Table 6 (appendix H): stored parameters of LoRA Ensembles on the Music Transformer,
  I x base + I x L x adapter, counted with the adapters' trainable q/v biases (what raytda
  stores) and with the low-rank factors alone (what the paper's numbers fit).
- Table 7 (appendix K): training time, serving time and space relative to one model, for
  naive (3, 10) and Dropout (D = 3, 10) by the paper's counting (raytda's analytic cost
  model, appendix E) and LoRA (L = 3, 10) from figure3_lora's measured unit costs.

Computes nothing that needs training; run the other scripts first (their results files
are read from --out)::

    python experiments/tables3_7_costs.py --data-root /work/shared/data
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

import common

PROG = "tables3_7_costs.py"
PAPER_SETTINGS = ("mnist-mlp", "cifar2-mlp", "cifar2-resnet9", "maestro-mt")
I_VALUES = (1, 3, 5, 10, 25)
PAPER_T3 = {  # MB: (Dropout, forward-only by D = 3, 10, 25), I = 5
    "mnist-mlp": (342, {3: 636, 10: 1956, 25: 4787}),
    "cifar2-mlp": (344, {3: 638, 10: 1966, 25: 4797}),
    "cifar2-resnet9": (477, {3: 785, 10: 2087, 25: 4877}),
    "maestro-mt": (538, {3: 634, 10: 1529, 25: 3421}),
}
PAPER_T4 = {"naive": {1: 431, 3: 538, 5: 538, 10: 538}, "lora": 404}  # MB
PAPER_T5 = {  # millions of parameters by I
    "mnist-mlp": {1: 0.11, 3: 0.33, 5: 0.55, 10: 1.09, 25: 2.73},
    "cifar2-mlp": {1: 0.38, 3: 1.14, 5: 1.89, 10: 3.79, 25: 9.48},
    "cifar2-resnet9": {1: 4.83, 3: 14.48, 5: 24.13, 10: 48.25, 25: 120.63},
    "maestro-mt": {1: 13.11, 3: 39.35, 5: 65.58, 10: 131.16, 25: 327.89},
}
PAPER_T6 = {  # millions; L = 0 is naive
    1: {0: 13.11, 3: 13.41, 10: 14.09, 25: 15.57}, 3: {0: 39.35, 3: 40.23, 10: 42.29, 25: 46.72},
    5: {0: 65.58, 3: 67.05, 10: 70.49, 25: 77.87}, 10: {0: 131.76, 3: 134.11, 10: 140.99, 25: 155.73},
}
PAPER_T7 = {"training time": [1, 3, 10, 1, 1, 2.00, 5.50], "serving time": [1, 3, 10, 3, 10, 1.85, 6.07],
            "space": [1, 3, 10, 1, 1, 1.03, 1.10]}
T7_COLUMNS = ["No Ensemble", "Naive (3)", "Naive (10)", "D=3", "D=10", "L=3", "L=10"]


def read(out: Path, stem: str) -> pd.DataFrame | None:
    path = out / f"{stem}.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def mib(row) -> str:
    return "–" if row is None else f"{row.peak_mem_bytes / 2**20:.0f}"


def table3(f1: pd.DataFrame | None) -> list[str]:
    if f1 is None:
        return ["(no figure1_dropout results in --out: run experiments/figure1_dropout.py)"]
    rows = []
    for s in sorted(f1.setting.unique()):
        sub = f1[f1.setting == s]
        i = int(sub[sub.ensemble == "dropout-forward"].I.max()) if (sub.ensemble == "dropout-forward").any() \
            else int(sub.I.max())
        paper = PAPER_T3.get(s)
        for d in sorted(sub[sub.ensemble == "dropout"].D.dropna().unique()):
            d = int(d)
            drop = common.pick(sub, ensemble="dropout", I=i, D=d)
            fwd = common.pick(sub, ensemble="dropout-forward", I=i, D=d)
            rows.append([s, i, d, f"{mib(drop)} ({paper[0] if paper else '–'})",
                         f"{mib(fwd)} ({paper[1].get(d, '–') if paper else '–'})"])
    return common.md_table(["setting", "I", "D", "Dropout MiB (paper MB, I=5)",
                            "forward-only MiB (paper MB, I=5)"], rows)


def table4(f3: pd.DataFrame | None) -> list[str]:
    if f3 is None:
        return ["(no figure3_lora results in --out: run experiments/figure3_lora.py)"]
    rows = []
    for r in f3.sort_values(["setting", "ensemble", "I", "L"]).itertuples():
        # The paper's Table 4 is the Music Transformer's; other settings have no paper number.
        paper = ("–" if r.setting != "maestro-mt" else PAPER_T4["lora"] if r.ensemble == "lora"
                 else PAPER_T4["naive"].get(int(r.I), "–"))
        rows.append([r.setting, r.label, f"{mib(r)} ({paper})"])
    return common.md_table(["setting", "configuration", "peak MiB (paper MB, full scale)"], rows)


def model_params(a, setting: str, full: bool) -> int:
    import argparse

    scaled = argparse.Namespace(**{**vars(a), "full": full})
    return sum(p.numel() for p in common.task_for(setting, scaled).build_model().parameters())


def table5(a) -> list[str]:
    rows = []
    for s in common.settings_of(a):
        full, cpu = model_params(a, s, True), model_params(a, s, False)
        paper = PAPER_T5.get(s, {})
        rows.append([s, *(f"{i * full / 1e6:.2f}M ({paper.get(i, '–')}M); ours {i * cpu / 1e6:.3f}M"
                          for i in I_VALUES)])
    return common.md_table(["setting", *(f"I = {i}" for i in I_VALUES)], rows)


def table6(a) -> list[str]:
    import argparse

    lines = []
    for full in (True, False):
        task = common.task_for("maestro-mt", argparse.Namespace(**{**vars(a), "full": full}))
        base = sum(p.numel() for p in task.build_model().parameters())
        factors, with_bias = common.adapter_counts(task)
        lines += [f"{'Paper' if full else 'Our CPU'} scale: base {base:,} parameters, adapter "
                  f"{with_bias:,} with the q/v biases, {factors:,} in the factors alone.", ""]
        rows = []
        for i, paper in PAPER_T6.items():
            cells = []
            for n in (0, 3, 10, 25):
                both = (i * base + i * n * with_bias, i * base + i * n * factors)
                ref = f" ({paper[n]}M)" if full else ""
                cells.append(f"{both[0] / 1e6:.2f}M / {both[1] / 1e6:.2f}M{ref}")
            rows.append([i, *cells])
        lines += common.md_table(["I", "naive (L = 0)", "L = 3", "L = 10", "L = 25"], rows) + [""]
    return ["Cells: with biases / factors only (paper).", "", *lines]


def table7(f3: pd.DataFrame | None) -> list[str]:
    from raytda.core.costs import UnitCosts
    from raytda.ensembles import Ensemble

    one = UnitCosts(train=1.0, serve=1.0, serve_forward_only=1.0)
    counted = [Ensemble("naive", 1), Ensemble("naive", 3), Ensemble("naive", 10),
               Ensemble("dropout", 1, 3), Ensemble("dropout", 1, 10)]
    ours = {c: [e.kind_class.train_time(e, one) if c == "training time" else
                e.kind_class.serve_time(e, one) if c == "serving time" else
                e.kind_class.stored_params(e, 1) for e in counted] for c in PAPER_T7}
    note = "L = 3 and 10: no figure3_lora results in --out."
    if f3 is not None:
        for s in sorted(f3.setting.unique()):
            sub = f3[f3.setting == s]
            naive = common.pick(sub, ensemble="naive", I=1)
            l1, l3 = common.pick(sub, ensemble="lora", I=1, L=1), common.pick(sub, ensemble="lora", I=1, L=3)
            if naive is None or l1 is None or l3 is None:
                continue
            # measured unit costs (appendix E): T_LoRA per adapter from L = 1 and 3, T_base
            # the rest; serving and space per adapter; L = 10 is the analytic model on them
            t_lora = (l3.train_time_s - l1.train_time_s) / 2
            t_base = l1.train_time_s - t_lora
            serve_unit = l3.serve_time_s / 3
            adapter = (l3.params - naive.params) / 3
            for n in (3, 10):
                ours["training time"].append((t_base + n * t_lora) / naive.train_time_s)
                ours["serving time"].append(n * serve_unit / naive.serve_time_s)
                ours["space"].append((naive.params + n * adapter) / naive.params)
            note = (f"L = 3 and 10 from {s}'s measured unit costs (figure3_lora): T_base and T_LoRA "
                    f"per adapter (from L = 1 and 3), serving per adapter, adapter size; L = 10 is "
                    f"the analytic model on those units (not run).")
            break
    rows = [[c, *(common.cell(o, p, "{:.2f}") for o, p in zip(ours[c] + [None] * 7, PAPER_T7[c]))]
            for c in PAPER_T7]
    return [*common.md_table(["cost", *T7_COLUMNS], rows), "", note]


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, PAPER_SETTINGS)
    a = common.parse(p, argv)
    if common.resolve(a, PROG) or common.check_notes(a, PROG):
        return 2
    out = Path(a.out)
    f1, f3 = read(out, "figure1_dropout"), read(out, "figure3_lora")
    lines = ["# Tables 3 to 7: memory, space and overhead, from stored results and counting", "",
             common.command(PROG, a), "",
             "Measured memory is the peak resident memory of a serving job on this CPU (MiB), not "
             "the paper's A40 GPU memory (MB); compare orderings and ratios, not values.", "",
             "## Table 3: peak serving memory, Dropout vs forward-only", "", *table3(f1), "",
             "## Table 4: peak serving memory, naive vs LoRA (Music Transformer)", "", *table4(f3), "",
             "## Table 5: stored parameters by I (any D), paper scale (paper); ours at CPU scale", "",
             *table5(a), "", "## Table 6: stored parameters of LoRA Ensembles (Music Transformer)", "",
             *table6(a), "## Table 7: overhead relative to one model, ours (paper)", "", *table7(f3)]
    frames = [f for f in (f1, f3) if f is not None]
    common.save(a, "tables3_7_costs", lines, pd.concat(frames) if frames else pd.DataFrame())
    return 0


if __name__ == "__main__":
    sys.exit(main())
