"""The dense-export benchmark runs end to end at a tiny size (so it cannot rot unnoticed)."""

from __future__ import annotations


def test_table_has_every_writer_and_ratio_one_for_the_baseline(load_benchmark, capsys):
    bench = load_benchmark("bench_dense_export")
    assert bench.main(["--n-test", "7", "--n-train", "5", "--rows", "3", "--rounds", "1"]) == 0
    rows = {line[:32].strip(): line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"write_dense test-train", "write_dense train-test",
                         "save_file (whole matrix)", "save_file (whole, transposed)"}
    assert rows["save_file (whole matrix)"][-1] == "1.00"
