"""The examples under examples/ and the README's "Bring your own model" block, run as they
stand at their smallest sizes.

Each example's ``main`` runs end to end into a temporary directory; the assertions are
about what it wrote (results table, plot, proponents) and what its store holds (scores).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# The shared data directory sits beside the repository root: <root>/../shared/data.
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CIFAR2_DIR = SHARED / "cifar2"
TEXT_DIR = SHARED / "shakespeare"


def load_example(name: str) -> ModuleType:
    """examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look classes up here
    spec.loader.exec_module(module)
    return module


def results(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet").set_index("label")


# --------------------------------------------------------------------------- CNN on CIFAR-2


@pytest.mark.data
@pytest.mark.skipif(not (CIFAR2_DIR / "cifar2.npz").is_file(),
                    reason=f"no shared CIFAR-2 at {CIFAR2_DIR}")
def test_cnn_cifar2_runs_naive_and_dropout_with_lds(tmp_path: Path) -> None:
    ex = load_example("cnn_cifar2")
    argv = ["--data-dir", str(CIFAR2_DIR), "--n-train", "80", "--n-test", "8", "--epochs", "2",
            "--proj-dim", "64", "--lds-m", "4", "--ensemble", "naive:I=1",
            "--ensemble", "dropout:I=1,D=2", "--out", str(tmp_path), "--quiet"]
    assert ex.main(argv) == 0
    df = results(tmp_path)
    assert set(df.index) == {"naive I=1", "dropout I=1 D=2"}
    assert df["lds"].map(math.isfinite).all()
    assert df.loc["dropout I=1 D=2", "n_members"] == 2
    # The user's CNN, not one of raytda's models: its own parameter count.
    assert df.loc["naive I=1", "params"] == sum(
        p.numel() for p in ex.SmallCNN().parameters())
    assert (tmp_path / "lds_vs_cost_cifar2-cnn_trak.png").is_file()
    scores = ex.build_sweep(ex.parse_args(argv)).scores("dropout:I=1,D=2")
    assert tuple(scores.shape) == (8, 80)


def test_cnn_cifar2_missing_data_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    ex = load_example("cnn_cifar2")
    assert ex.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "store").exists()


def test_cnn_task_loads_from_the_command_line_with_no_arguments(tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    from raytda.cli import load_task, main

    task = load_task(f"{EXAMPLES / 'cnn_cifar2.py'}:Cifar2CNN")
    assert task.name == "cifar2-cnn" and task.recipe is not None
    # Without the data the CLI stops before any work with raytda's one-line error.
    monkeypatch.setenv("RAYTDA_DATA", str(tmp_path / "empty"))
    rc = main(["sweep", "--task", f"{EXAMPLES / 'cnn_cifar2.py'}:Cifar2CNN", "--no-lds",
               "--ensemble", "naive:I=1", "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2
    assert "raytda: error:" in capsys.readouterr().err


# --------------------------------------------------------------------------- Hugging Face LM


def test_hf_causal_lm_lora_and_dropout_next_to_naive(tmp_path: Path, caplog) -> None:
    ex = load_example("hf_causal_lm")
    caplog.set_level(logging.INFO, logger="raytda.core.grads")
    argv = ["--n-train", "40", "--n-test", "6", "--seq-len", "16", "--epochs", "2",
            "--proj-dim", "64", "--lds-m", "3", "--ensemble", "naive:I=1",
            "--ensemble", "lora:I=1,L=2", "--ensemble", "dropout:I=1,D=2",
            "--out", str(tmp_path), "--quiet"]
    if TEXT_DIR.is_dir():
        argv += ["--data-dir", str(TEXT_DIR)]
    assert ex.main(argv) == 0
    df = results(tmp_path)
    assert set(df.index) == {"naive I=1", "lora I=1 L=2", "dropout I=1 D=2"}
    assert df["lds"].map(math.isfinite).all()
    assert df.loc["lora I=1 L=2", "n_members"] == 2
    assert df.loc["dropout I=1 D=2", "n_members"] == 2
    # One base model plus two adapters of rank 4 on q_proj and v_proj (32 -> 32, no
    # bias) in each of the 2 layers: 2 x (2 layers x 2 modules x 4 x (32 + 32)).
    assert df.loc["lora I=1 L=2", "params"] - df.loc["naive I=1", "params"] == 2 * 1024
    scores = ex.build_sweep(ex.parse_args(argv)).scores("lora:I=1,L=2")
    assert tuple(scores.shape) == (6, 40)
    # The docstring's claim: per-sample gradients of this model go through vmap.
    assert not [r for r in caplog.records if "vmap over" in r.getMessage()]


def test_hf_model_has_dropout_modules_and_lora_targets() -> None:
    from torch import nn

    ex = load_example("hf_causal_lm")
    task = ex.CharGPTNeo(n_train=10, n_test=2, seq_len=16)
    model = task.build_model()
    assert model.config._attn_implementation == "eager"
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    assert len(rates) == 5  # embeddings, then attention output and MLP of each layer
    sites = task.network(model).sites
    assert [s.shape for s in sites] == [(32,)] * 5
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "v_proj"} <= names


def test_hf_gpt2_on_ragged_tokenizer_rows_naive_lora_and_dropout(tmp_path: Path, caplog) -> None:
    ex = load_example("hf_gpt2_ragged")
    caplog.set_level(logging.INFO, logger="raytda.core.grads")
    argv = ["--n-train", "40", "--n-test", "6", "--max-chars", "32", "--epochs", "2",
            "--proj-dim", "32", "--lds-m", "3", "--ensemble", "naive:I=1",
            "--ensemble", "lora:I=1,L=2", "--ensemble", "dropout:I=1,D=2",
            "--out", str(tmp_path), "--quiet"]
    if TEXT_DIR.is_dir():
        argv += ["--data-dir", str(TEXT_DIR)]
    assert ex.main(argv) == 0
    df = results(tmp_path)
    assert set(df.index) == {"naive I=1", "lora I=1 L=2", "dropout I=1 D=2"}
    assert df["lds"].map(math.isfinite).all()
    assert df.loc["dropout I=1 D=2", "n_members"] == 2
    # Two adapters of rank 4 on c_attn (64 -> 192) in each of 2 layers, with that
    # layer's bias (peft's bias="lora_only"): 2 x 2 x (4 x (64 + 192) + 192).
    assert df.loc["lora I=1 L=2", "params"] - df.loc["naive I=1", "params"] == 2 * 2 * 1216
    sweep = ex.build_sweep(ex.parse_args(argv))
    assert tuple(sweep.scores("dropout:I=1,D=2").shape) == (6, 40)
    # The rows really are ragged: batches are padded, and still vmap takes the gradients.
    task = sweep.spec.tasks[0]
    assert len({len(r["input_ids"]) for r in task.train_data().dataset}) > 5
    assert not [r for r in caplog.records if "vmap over" in r.getMessage()]


# --------------------------------------------------------------------------- own checkpoints


def test_own_checkpoints_attribution_and_own_ground_truth(tmp_path: Path) -> None:
    ex = load_example("own_checkpoints")
    argv = ["--n-train", "100", "--n-test", "10", "--epochs", "3", "--gt-models", "4",
            "--proj-dim", "64", "--out", str(tmp_path), "--quiet"]
    assert ex.main(argv) == 0
    ckpts = sorted((tmp_path / "checkpoints").glob("*.safetensors"))
    assert len(ckpts) == 6  # 2 runs x 3 checkpoints
    df = results(tmp_path)
    assert set(df.index) == {"naive I=2", "checkpoints I=2 C=3", "dropout I=2 D=4"}
    assert df["lds"].map(math.isfinite).all()  # against the script's own ground truth
    assert (df["train_time_s"] == 0).all()     # raytda trained nothing
    assert df.loc["checkpoints I=2 C=3", "n_members"] == 6
    assert df.loc["dropout I=2 D=4", "n_members"] == 8
    top = pd.read_csv(tmp_path / "proponents_test0.csv")
    assert list(top["rank"]) == [1, 2, 3, 4, 5]
    assert top["score"].is_monotonic_decreasing
    assert top["train_index"].between(0, 99).all()

    # Scores from the store, through a Task built on the same files.
    (x, _), _ = ex.digits(100, 10)
    runs = [sorted((tmp_path / "checkpoints").glob(f"run{r}_*"),
                   key=lambda p: int(p.stem.rsplit("epoch", 1)[1])) for r in range(2)]
    sweep = ex.Sweep(ex.OwnCheckpoints(runs, 100, 10), ensembles=ex.ENSEMBLES, lds=None,
                     store=str(tmp_path / "store"), proj_dim=64, progress=False)
    assert sweep.plan().todo == []  # main stored everything this sweep needs
    scores = sweep.scores("checkpoints:I=2,C=3")
    assert tuple(scores.shape) == (10, 100)
    assert scores[0].topk(5).indices.tolist() == list(top["train_index"])


# --------------------------------------------------------------------------- README


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has one python code block"
    return blocks[0]


def test_readme_bring_your_own_model_block_runs(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(readme_block())
    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dropout" in proc.stdout and "torch.Size([20, 100])" in proc.stdout
    assert (tmp_path / "my-store").is_dir()
