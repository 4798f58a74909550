"""Plots: every series named in a legend, cost-axis tick labels that do not overlap, and
integer ticks where x counts models (experiments' figures over I)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from raytda.plot import AXES, plot_results, results_figure  # noqa: E402

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def results(serve_times: list[float]) -> pd.DataFrame:
    """A results table: naive and Dropout D=10 at I = 1.., with the given serving times
    (Dropout's ten times naive's, as its D masks cost)."""
    rows = []
    for i, s in enumerate(serve_times, start=1):
        rows.append(dict(setting="digits-mlp", method="trak", ensemble="naive", D=1, I=i,
                         lds=0.1 + 0.03 * i, lds_se=0.01, train_time_s=2.0 * i,
                         serve_time_s=s, params=17226 * i))
        rows.append(dict(setting="digits-mlp", method="trak", ensemble="dropout", D=10, I=i,
                         lds=0.2 + 0.03 * i, lds_se=0.01, train_time_s=2.0 * i,
                         serve_time_s=10 * s, params=17226 * i))
    return pd.DataFrame(rows)


@pytest.fixture
def figure():
    figs = []

    def make(df: pd.DataFrame):
        fig = results_figure(df, "trak on digits-mlp")
        fig.canvas.draw()
        figs.append(fig)
        return fig

    yield make
    for f in figs:
        plt.close(f)


def test_every_panel_series_is_in_the_figure_legend(figure):
    fig = figure(results([0.8, 1.7, 2.5, 4.2]))
    assert len(fig.axes) == len(AXES) and len(fig.legends) == 1
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert legend == {"naive", "dropout D=10", "Pareto frontier"}
    for ax in fig.axes:
        labels = set(ax.get_legend_handles_labels()[1])
        assert labels and labels <= legend, ax.get_xlabel()


def test_each_kind_names_its_own_lines(figure):
    # checkpoints-dropout: a line per D (C varies along it); lora: one line over I and L
    rows = [dict(setting="s", method="trak", ensemble="checkpoints-dropout", I=i, D=d, C=c,
                 L=0, lds=0.1 * i + 0.01 * c, lds_se=0.01, train_time_s=i, serve_time_s=d * c,
                 params=1000 * i * c) for i in (1, 2) for d in (2, 3) for c in (1, 2)]
    rows += [dict(setting="s", method="trak", ensemble="lora", I=i, D=1, C=1, L=n,
                  lds=0.2 + 0.01 * n, lds_se=0.01, train_time_s=i + n, serve_time_s=n,
                  params=1000 * i + 10 * n) for i in (1, 2) for n in (1, 3)]
    fig = figure(pd.DataFrame(rows))
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert legend == {"checkpoints-dropout D=2", "checkpoints-dropout D=3", "lora",
                      "Pareto frontier"}


def visible_tick_labels(ax):
    lo, hi = sorted(ax.get_xlim())
    return [t for t in ax.get_xticklabels(which="both")
            if t.get_text() and lo <= t.get_position()[0] <= hi]


def one_series(costs: list[float]) -> pd.DataFrame:
    """Naive ensembles whose every cost (time in s, parameters in 1e5) takes ``costs``."""
    return pd.DataFrame([dict(setting="s", method="trak", ensemble="naive", D=1, I=i,
                              lds=0.1 * i, lds_se=0.01, train_time_s=c, serve_time_s=c,
                              params=int(c * 1e5)) for i, c in enumerate(costs, start=1)])


# Cost ranges whose tick labels overlapped before (matplotlib's '3 x 10^-2' minor labels
# under a decade, crowded labels near a decade), one that overlapped in a first fix
# (0.012 to 0.03: eight linear labels), and ranges over several decades.
@pytest.mark.parametrize("costs", [[0.012, 0.0137, 0.0157, 0.018], [1.3, 1.49, 1.7, 1.95],
                                   [0.03, 0.074, 0.18, 0.42], [0.012, 0.016, 0.022, 0.03],
                                   [0.83, 1.7, 2.5, 4.2], [0.01, 0.5, 30.0, 5000.0]])
def test_cost_axis_tick_labels_do_not_overlap(figure, costs):
    fig = figure(one_series(costs))
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = visible_tick_labels(ax)
        assert len(labels) >= 2, (ax.get_xlabel(), [t.get_text() for t in labels])
        boxes = [t.get_window_extent(renderer) for t in labels]
        for (a, ta), (b, tb) in itertools.combinations(zip(boxes, labels), 2):
            assert not a.overlaps(b), (ax.get_xlabel(), ta.get_text(), tb.get_text())


def load_experiments_common(monkeypatch):
    name = "experiments_common_for_plots"
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / "common.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def test_figure6_panels_over_i_have_integer_ticks(monkeypatch):
    """figure6_methods.py plots LDS over I per method (common.plot_grid): its default I=1,3
    once gave ticks at 1.5, 2.5."""
    common = load_experiments_common(monkeypatch)
    df = pd.DataFrame([dict(method=m, ensemble=k, D=d, I=i, lds=0.1 * i, lds_se=0.01)
                       for m in ("if", "grad-dot") for k, d in (("naive", 1), ("dropout", 10))
                       for i in (1, 3)])
    panels = [(m, df[df.method == m], "I", "independently trained models I")
              for m in sorted(df.method.unique())]
    fig = common.panels_figure(panels, common.family_series)
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            ticks = [float(t.get_text().replace("\N{MINUS SIGN}", "-"))
                     for t in visible_tick_labels(ax)]
            assert ticks and all(v.is_integer() for v in ticks), ticks
            assert ax.get_legend() is not None
    finally:
        plt.close(fig)


def test_no_figure_for_a_method_without_lds(tmp_path):
    """Rows without LDS (an attribution-only sweep) get no figure; a method with LDS
    beside them still gets its own."""
    df = results([0.8, 1.7])
    assert plot_results(df.assign(lds=float("nan")), tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
    mixed = pd.concat([df, df.assign(method="grad-dot", lds=float("nan"))])
    paths = plot_results(mixed, tmp_path / "mixed")
    assert [p.name for p in paths] == ["lds_vs_cost_digits-mlp_trak.png"]
    assert sorted(p.name for p in (tmp_path / "mixed").iterdir()) == [p.name for p in paths]
