"""`raytda scores DIR`: a configuration's scores (long Parquet or dense safetensors) and
top-k per test sample as Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from raytda.api import Sweep
from raytda.cli import build_sweep, main, parser
from raytda.export import top_k, write_dense

ARGS = ["--setting", "toy-mlp", "--ensemble", "naive:I=1", "--ensemble", "dropout:I=1,D=2",
        "--lds-m", "4", "--proj-dim", "8", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scores-run")
    assert main(["sweep", *ARGS, "--out", str(out)]) == 0
    return out


def test_scores_and_top_k_match_the_stored_scores(run_dir, capsys):
    capsys.readouterr()
    assert main(["scores", str(run_dir), "--ensemble", "dropout:I=1,D=2", "--top-k", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    sweep: Sweep = build_sweep(parser().parse_args(["sweep", *ARGS, "--out", str(run_dir)]))
    expected = sweep.scores("dropout:I=1,D=2").numpy()
    full = pd.read_parquet(run_dir / "scores_toy-mlp_trak_dropout_I=1_D=2.parquet")
    assert len(full) == expected.size
    got = np.zeros_like(expected)
    got[full.test_index, full.train_index] = full.score
    np.testing.assert_array_equal(got, expected)
    top = pd.read_parquet(run_dir / "topk_toy-mlp_trak_dropout_I=1_D=2.parquet")
    assert len(top) == expected.shape[0] * 3 * 2
    for t in (0, expected.shape[0] - 1):
        pro = top[(top.test_index == t) & (top.kind == "proponent")].sort_values("rank")
        opp = top[(top.test_index == t) & (top.kind == "opponent")].sort_values("rank")
        assert list(pro.train_index) == list(np.argsort(-expected[t], kind="stable")[:3])
        assert list(opp.score) == sorted(expected[t])[:3]


def test_unknown_configuration_is_one_error_line(run_dir, capsys):
    assert main(["scores", str(run_dir), "--ensemble", "naive:I=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no configurations match 'naive I=5'" in err[0]


def test_top_k_ranks_ties_stably():
    s = np.array([[1.0, 3.0, 3.0, -2.0]])
    t = top_k(s, 2, first_row=7)
    pro = t[t.kind == "proponent"]
    assert list(pro.train_index) == [1, 2] and set(t.test_index) == {7}
    assert list(t[t.kind == "opponent"].train_index) == [3, 0]


def test_chunked_scores_equal_one_chunk(tmp_path):
    """Scores are written in chunks of test rows; the chunking must not change them."""
    from raytda.core.args import ComputeArgs

    one = Sweep("toy-mlp", "trak", ["dropout:I=1,D=2"], lds=None, proj_dim=8,
                store=str(tmp_path / "a"), progress=False)
    one.run()
    many = Sweep("toy-mlp", "trak", ["dropout:I=1,D=2"], lds=None, proj_dim=8,
                 store=str(tmp_path / "b"), progress=False,
                 compute=ComputeArgs(score_chunk_bytes=8 * 60 * 5))  # 5 rows of 60 per chunk
    many.run()
    chunks = list(many.iter_scores("dropout:I=1,D=2"))
    assert [r.stop - r.start for r, _ in chunks] == [5, 5, 2]
    torch.testing.assert_close(many.scores("dropout:I=1,D=2"), one.scores("dropout:I=1,D=2"))


@pytest.mark.parametrize("orientation", ["test-train", "train-test"])
def test_dense_export_equals_sweep_scores(run_dir, capsys, orientation):
    """The safetensors file holds Sweep.scores() (transposed for train-test), and says so."""
    from safetensors import safe_open

    assert main(["scores", str(run_dir), "--ensemble", "dropout:I=1,D=2",
                 "--dense", orientation, "--out", str(run_dir / orientation)]) == 0
    sweep: Sweep = build_sweep(parser().parse_args(["sweep", *ARGS, "--out", str(run_dir)]))
    expected = sweep.scores("dropout:I=1,D=2")
    path = run_dir / orientation / f"scores_toy-mlp_trak_dropout_I=1_D=2_{orientation}.safetensors"
    assert str(path) in capsys.readouterr().out
    assert not (run_dir / orientation / "scores_toy-mlp_trak_dropout_I=1_D=2.parquet").exists()
    with safe_open(str(path), "pt") as f:
        meta, got = f.metadata(), f.get_tensor("scores")
    rows, cols = orientation.split("-")
    assert (meta["orientation"], meta["rows"], meta["columns"]) == (orientation, rows, cols)
    assert meta["label"] == "dropout I=1 D=2"
    torch.testing.assert_close(got, expected if orientation == "test-train" else expected.T,
                               rtol=0, atol=0)


@pytest.mark.parametrize("orientation", ["test-train", "train-test"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dense_writer_assembles_chunks_in_either_orientation(tmp_path, orientation, dtype):
    """Chunks of uneven size, bit for bit, in a file the safetensors library reads."""
    from safetensors.torch import load_file

    full = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    chunks = [(slice(a, b), full[a:b]) for a, b in ((0, 3), (3, 4), (4, 7))]
    path = write_dense(chunks, 7, 5, tmp_path / "s.safetensors", orientation, {"note": "x"})
    got = load_file(str(path))["scores"]
    assert got.dtype == dtype
    assert torch.equal(got, full if orientation == "test-train" else full.T)
    assert not list(tmp_path.glob("*.tmp"))


def test_dense_export_rejects_an_unknown_orientation(run_dir, capsys):
    assert main(["scores", str(run_dir), "--ensemble", "naive:I=1", "--dense", "train x test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown orientation 'train x test'" in err[0]
