"""The scale benchmark's rows run end to end at a tiny size, and a failing row is reported
as a row (so one model's failure on a device does not lose the others' numbers)."""

from __future__ import annotations

import pytest


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("bench_scale")


def test_factorized_row_counts_its_samples_and_compares_with_a_plain_pass(bench):
    row = bench.run_row("gpt2-3m", "factorized", None, None, repeats=1, samples=4, batch=2)
    assert row["samples"] == 4 and row["extrapolated"] is False
    assert 0 < row["dim"] <= bench.K
    assert row["s_per_sample"] > 0 and row["x_plain"] > 0


def test_a_failed_row_is_listed_and_the_others_are_kept(bench, monkeypatch, capsys):
    def fake(model, method, a):
        if method == "dense":
            raise RuntimeError("row resnet9:dense failed:\nCUDA out of memory")
        return {"params": 10, "method": method, "samples": 4, "s_per_sample": 0.5,
                "extrapolated": False, "x_plain": 1.0, "peak_mb": 1.0}

    monkeypatch.setattr(bench, "row_in_subprocess", fake)
    assert bench.main(["--only", "resnet9", "--no-variance"]) == 0
    out = capsys.readouterr().out
    table, _, failures = out.partition("Rows that failed")

    def resnet_rows(text: str) -> list[list[str]]:
        return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
                if line.startswith("| resnet9")]

    assert [r[2] for r in resnet_rows(table)] == ["fwd+bwd", "factorized", "sketch"]
    assert resnet_rows(failures) == [["resnet9", "dense", "CUDA out of memory"]]
