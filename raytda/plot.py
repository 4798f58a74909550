"""LDS against cost (training time, serving time, stored parameters), like the paper's
figures 1 to 3, with the Pareto frontier drawn per setting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.ticker import FuncFormatter, Locator, MaxNLocator, NullFormatter

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

AXES = (("train_time_s", "training time (s)"), ("serve_time_s", "serving time (s)"),
        ("params", "stored parameters"))


def plot_results(df: pd.DataFrame, out_dir: str | Path, fmt: str = "png") -> list[Path]:
    """One figure per (setting, method): three panels, one line per ensemble kind.

    A (setting, method) without any LDS (an attribution-only sweep, ``--no-lds``) has
    nothing to draw and gets no figure; with none to draw, nothing is written and the
    list is empty."""
    drawn = df[pd.to_numeric(df["lds"], errors="coerce").notna()] if "lds" in df else df[:0]
    if drawn.empty:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    from raytda.results import file_stem, method_names

    for (setting, method), grp in drawn.groupby([drawn["setting"], method_names(drawn)]):
        fig = results_figure(grp, f"{method} on {setting}")
        path = out_dir / f"lds_vs_cost_{setting}_{file_stem(method)}.{fmt}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def results_figure(grp: pd.DataFrame, title: str) -> Figure:
    """Three panels (LDS against each cost) of one (setting, method); one legend for the
    figure, since every panel draws the same series."""
    import matplotlib.pyplot as plt

    from raytda.results import pareto_mask

    fig, axes = plt.subplots(1, len(AXES), figsize=(5 * len(AXES), 4), sharey=True)
    for ax, (col, label) in zip(axes, AXES):
        for name, sub in series(grp):
            sub = sub.sort_values(col)
            ax.errorbar(sub[col], sub["lds"], yerr=sub["lds_se"], marker="o", capsize=2,
                        label=name)
        front = grp[pareto_mask(grp[col].to_numpy(float), grp["lds"].to_numpy(float))]
        front = front.sort_values(col)
        ax.step(front[col], front["lds"], where="post", color="k", lw=1, ls="--",
                label="Pareto frontier")
        ax.set_xscale("log")
        readable_log_ticks(ax.xaxis, thousands=col == "params")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("LDS")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(labels), 5), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def series(grp: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The rows of each line, by kind, then by the sizes its kind draws as separate
    lines (:meth:`EnsembleKind.series <raytda.ensembles.EnsembleKind.series>`)."""
    from raytda.ensembles import ensemble_kind

    out = []
    for kind_name, of_kind in grp.groupby("ensemble"):
        kind = ensemble_kind(kind_name)
        fields = list(kind.series_fields)
        if not fields:
            out.append((kind.series({}), of_kind))
            continue
        for values, sub in of_kind.groupby(fields):
            values = values if isinstance(values, tuple) else (values,)
            out.append((kind.series(dict(zip(fields, values))), sub))
    return out


def readable_log_ticks(axis: Axis, thousands: bool = False) -> None:
    """Labels at 1, 2 and 5 times powers of ten, written as plain numbers ('0.5', '20',
    '50k'), and unlabelled minor ticks: matplotlib's default labels minor ticks as
    '3 x 10^0' when an axis spans less than a decade, and those overlap."""

    def plain(v: float, _pos: int) -> str:
        if thousands and v >= 1e6:
            return f"{v / 1e6:g}M"
        if thousands and v >= 1e3:
            return f"{v / 1e3:g}k"
        return f"{v:g}"

    axis.set_major_locator(OneTwoFiveLocator())
    axis.set_major_formatter(FuncFormatter(plain))
    axis.set_minor_formatter(NullFormatter())


class OneTwoFiveLocator(Locator):
    """Major ticks of a log axis: 1, 2 and 5 times powers of ten over up to two decades,
    powers of ten (every k-th, about six) beyond; under two such ticks in view, four or so
    linear ones at round steps."""

    def __call__(self) -> list[float]:
        vmin, vmax = sorted(self.axis.get_view_interval())
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        if not 0 < vmin < vmax:
            return [vmin] if vmin > 0 else []
        low, high = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
        if high - low <= 2:
            ticks = [m * 10.0**e for e in range(low, high + 1) for m in (1, 2, 5)]
        else:
            stride = math.ceil((high - low) / 6)
            ticks = [10.0**e for e in range(low, high + 1) if e % stride == 0]
        in_view = [t for t in ticks if vmin <= t <= vmax]
        if len(in_view) >= 2:
            return in_view
        return [t for t in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
                if vmin <= t <= vmax]
