"""LDS against cost (training time, serving time, stored parameters), like the paper's
figures 1 to 3, with the Pareto frontier drawn per setting."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

AXES = (("train_time_s", "training time (s)"), ("serve_time_s", "serving time (s)"),
        ("params", "stored parameters"))


def plot_results(df: pd.DataFrame, out_dir: str | Path, fmt: str = "png") -> list[Path]:
    """One figure per (setting, method): three panels, one line per ensemble kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raytda.ensembles import ensemble_kind
    from raytda.results import pareto_mask

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (setting, method), grp in df.groupby(["setting", "method"]):
        fig, axes = plt.subplots(1, len(AXES), figsize=(5 * len(AXES), 4), sharey=True)
        for ax, (col, label) in zip(axes, AXES):
            for (kind, d_val), sub in grp.groupby(["ensemble", "D"]):
                sub = sub.sort_values(col)
                takes_d = "D" in ensemble_kind(kind).takes
                name = f"{kind} D={d_val}" if takes_d else kind
                ax.errorbar(sub[col], sub["lds"], yerr=sub["lds_se"], marker="o", capsize=2,
                            label=name)
            front = grp[pareto_mask(grp[col].to_numpy(float), grp["lds"].to_numpy(float))]
            front = front.sort_values(col)
            ax.step(front[col], front["lds"], where="post", color="k", lw=1, ls="--",
                    label="Pareto frontier")
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("LDS")
        axes[-1].legend(fontsize=8)
        fig.suptitle(f"{method} on {setting}")
        fig.tight_layout()
        path = out_dir / f"lds_vs_cost_{setting}_{method}.{fmt}"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
