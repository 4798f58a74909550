"""Reproduce the paper's Figure 3 (and Table 7's LoRA column): LoRA Ensemble against naive.

TRAK on the Music Transformer (maestro-mt; also shakespeare-gpt with ``--setting``): naive
independent ensembles I = 1, 2, 3, 5 against LoRA Ensembles with one base model and
L = 1, 2, 3 adapters (base trained on the full set for half the epochs, each adapter on
its own random half for the other half; rank 8, alpha 8, q_proj and v_proj, gradients
over the adapter only). Reports LDS, training time, serving time and stored parameters,
the reductions of LoRA (I=1, L=3) against naive I=5 and I=3 beside the paper's (78.4% less
training time, 60.5% less serving time, 79.6% fewer parameters against naive I=5), and
Table 7's relative LoRA overheads (L=3: 2.00 / 1.85 / 1.03 x one model).

CPU scale (default)::

    python experiments/figure3_lora.py --data-root /work/shared/data

Paper scale on a Ray cluster (see clusters/)::

    python experiments/figure3_lora.py --full --executor ray --device cuda
"""

from __future__ import annotations

import sys

import common

PROG = "figure3_lora.py"
NAIVE_I = (1, 2, 3, 5)
LORA_L = (1, 2, 3)
#: Section 4.2: LoRA (I=1, L=3) against naive I=5 on Music Transformer
PAPER_REDUCTION = {"train_time_s": 78.4, "serve_time_s": 60.5, "params": 79.6}
#: Table 7 (appendix K), relative to one model: LoRA L=3 and L=10
PAPER_TABLE7 = {3: {"train_time_s": 2.00, "serve_time_s": 1.85, "params": 1.03},
                10: {"train_time_s": 5.50, "serve_time_s": 6.07, "params": 1.10}}
COSTS = (("train_time_s", "training time"), ("serve_time_s", "serving time"),
         ("params", "stored parameters"))


def ensembles(l_values=LORA_L, i_values=NAIVE_I) -> list[str]:
    return [f"naive:I={i}" for i in i_values] + [f"lora:I=1,L={n}" for n in l_values]


def reduction_rows(df, setting: str) -> list[list[str]]:
    sub = df[df.setting == setting]
    lora = common.pick(sub, ensemble="lora", I=1, L=3)
    rows = []
    for i in (5, 3):
        naive = common.pick(sub, ensemble="naive", I=i)
        if lora is None or naive is None:
            continue
        cells = [f"{100 * (1 - getattr(lora, c) / getattr(naive, c)):.1f}%"
                 + (f" ({PAPER_REDUCTION[c]:.1f}%)" if i == 5 else "") for c, _ in COSTS]
        rows.append([f"LoRA (I=1, L=3) vs naive I={i}", *cells,
                     f"{lora.lds:.3f} vs {naive.lds:.3f}"])
    return rows


def overhead_rows(df, setting: str) -> list[list[str]]:
    sub = df[df.setting == setting]
    one = common.pick(sub, ensemble="naive", I=1)
    rows = []
    for n in sorted(sub[sub.ensemble == "lora"].L.unique()):
        lora = common.pick(sub, ensemble="lora", I=1, L=n)
        if one is None or lora is None:
            continue
        paper = PAPER_TABLE7.get(n, {})
        rows.append([f"L={int(n)}", *(common.cell(getattr(lora, c) / getattr(one, c), paper.get(c), "{:.2f}")
                                 for c, _ in COSTS)])
    return rows


TITLE = "Figure 3: LoRA Ensemble vs naive (TRAK), measured by raytda"


def render(a, outcome, counts: dict[str, tuple[int, int]], tasks, title: str = TITLE,
           prog: str = PROG, reasons=None, unstated=None) -> list[str]:
    """The results file's lines: per setting (headed with the scale it ran at), each
    configuration's costs, LoRA's reductions and Table 7's overheads beside the paper's."""
    df = outcome.df
    labels = {t.name: common.scale_label(t) for t in tasks}
    lines = common.header(title, prog, a, outcome, reasons, unstated)
    for setting in sorted(df.setting.unique()):
        sub = df[df.setting == setting].sort_values(["ensemble", "I", "L"])
        factors, with_bias = counts[setting]
        lines += [f"## {labels.get(setting, setting)}", "",
                  "Each configuration as if run alone (training: I x T_base + I x L x T_LoRA; "
                  "serving: features, Q and scores of every member):", "",
                  *common.md_table(
                      ["configuration", "LDS", "train s", "serve s", "stored params", "peak MiB"],
                      ([r.label, common.lds_cell(r), f"{r.train_time_s:.1f}", f"{r.serve_time_s:.1f}",
                        f"{r.params:,}", f"{r.peak_mem_bytes / 2**20:.0f}"] for r in sub.itertuples())),
                  "", f"One adapter: {with_bias:,} parameters stored and differentiated (peft "
                  f"'lora_only' also trains the q/v biases); {factors:,} in the low-rank factors "
                  f"alone, the count the paper's Table 6 fits.", "",
                  "Reduction of LoRA (I=1, L=3), measured (paper, Music Transformer, vs naive I=5):",
                  "", *common.md_table(["comparison", *(n for _, n in COSTS), "LDS (LoRA vs naive)"],
                                       reduction_rows(df, setting)),
                  "", "Table 7, LoRA overhead relative to one model (naive I=1), measured (paper):", "",
                  *common.md_table(["LoRA, I=1", *(n for _, n in COSTS)], overhead_rows(df, setting)), ""]
    return lines


def plot(a, df, tasks, stem: str = "figure3_lora") -> None:
    """``<stem>_<setting>.png``: LDS against each cost, naive over I and LoRA over L."""
    from pathlib import Path

    def series(rows):
        yield "naive (over I)", rows[rows.ensemble == "naive"]
        yield "LoRA I=1 (over L)", rows[rows.ensemble == "lora"]

    labels = {t.name: common.scale_label(t) for t in tasks}
    for setting in df.setting.unique():
        rows = df[df.setting == setting]
        common.plot_panels(Path(a.out) / f"{stem}_{setting}.png",
                           [(f"{labels.get(setting, setting)}:\nLDS vs {name}", rows, c,
                             name if c == "params" else f"{name} (s)") for c, name in COSTS], series)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, ["maestro-mt"])
    p.add_argument("--I", default=",".join(map(str, NAIVE_I)), help="naive ensemble sizes")
    p.add_argument("--L", default=",".join(map(str, LORA_L)), help="adapters per base (I = 1)")
    a = common.parse(p, argv)
    if common.resolve(a, PROG) or common.check_notes(a, PROG):
        return 2
    tasks = [common.task_for(s, a) for s in common.settings_of(a)]
    outcome = common.run_sweep(a, tasks, ensembles(common.int_list(a.L), common.int_list(a.I)))
    if outcome is None:
        return 1
    counts = {t.name: common.adapter_counts(t) for t in tasks}
    common.save(a, "figure3_lora", render(a, outcome, counts, tasks), outcome.df,
                {"seconds": outcome.seconds, "adapter_params": counts})
    plot(a, outcome.df, tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
