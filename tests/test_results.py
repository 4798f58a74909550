"""The printed results table fits the terminal: columns go, least wanted first, then a
stacked layout; the Parquet file keeps everything."""

from __future__ import annotations

import pandas as pd
import pytest

from raytda.results import add_pareto, format_table


def table(n: int = 8) -> pd.DataFrame:
    """A results table like the default digits sweep's (121 columns wide when printed)."""
    rows = []
    for i in range(1, n + 1):
        kind = "naive" if i % 2 else "dropout"
        rows.append(dict(setting="digits-mlp", method="trak", ensemble=kind, I=i, D=10,
                         label=f"{kind} I={i}" + (" D=10" if kind == "dropout" else ""),
                         lds=0.1 + 0.01 * i, lds_se=0.011, train_time_s=2.5 * i,
                         serve_time_s=13.1 * i, params=17226 * i,
                         peak_mem_bytes=123456789 * i,
                         measured_on="cpu x1 (torch threads 1), Intel Xeon"))
    return add_pareto(pd.DataFrame(rows))


@pytest.mark.parametrize("width", [40, 80, 200])
def test_no_line_is_wider_than_the_terminal_and_every_configuration_shows(width):
    df = table()
    text = format_table(df, width)
    assert all(len(ln) <= width for ln in text.splitlines()), text
    for label, lds in zip(df["label"], df["lds"]):
        assert label in text and f"{lds:.4g}" in text
    if width >= 80:  # a table still: the times are columns
        assert any(ln.split()[:2] == ["label", "lds"] or "train_time_s" in ln.split()
                   for ln in text.splitlines()), text


def test_at_80_columns_a_table_that_names_what_it_left_out():
    df = table()
    assert max(map(len, format_table(df).splitlines())) > 80  # the full table is wider
    lines = format_table(df, 80).splitlines()
    assert lines[0] == "setting: digits-mlp" and lines[1] == "method: trak"
    header = lines[2].split()
    assert header[:4] == ["label", "lds", "lds_se", "train_s"], header
    assert lines[-1].startswith("not shown: ") and "results.parquet" in lines[-1]
    assert "measured_on" in lines[-1] and len(lines) == 2 + 1 + len(df) + 1


def test_a_wide_terminal_gets_the_whole_table():
    df = table()
    assert format_table(df, 200) == format_table(df)


def test_report_fits_columns(tmp_path, monkeypatch, capsys):
    from raytda.cli import main

    run = tmp_path / "run"
    run.mkdir()
    table().to_parquet(run / "results.parquet")
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert all(len(ln) <= 80 for ln in out.splitlines() if not ln.startswith("plots:"))
    assert "dropout I=8 D=10" in out
