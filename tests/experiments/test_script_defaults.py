"""The experiment scripts resolve data and device the same way wherever they are copied:
--data-dir, else $RAYTDA_DATA/<name>, else ~/raytda-data/<name>; --device auto by default;
a missing directory or an impossible device stops them with one line, before any work."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYTDA_DATA", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_table1_defaults_do_not_depend_on_the_script_location(home, monkeypatch, tmp_path):
    t1 = script("table1_mnist")
    a = t1.parse_args([])
    assert a.data_dir is None and a.device == "auto"
    (home / "raytda-data" / "mnist").mkdir(parents=True)
    t1.resolve(a)
    assert a.data_dir == str((home / "raytda-data" / "mnist").resolve()) and a.device == "cpu"
    (tmp_path / "shared" / "mnist").mkdir(parents=True)
    monkeypatch.setenv("RAYTDA_DATA", str(tmp_path / "shared"))
    a = t1.parse_args(["--executor", "ray", "--device", "cuda"])
    t1.resolve(a)  # a CPU-only head still sends GPU jobs to the cluster
    assert a.data_dir == str((tmp_path / "shared" / "mnist").resolve()) and a.device == "cuda"


@pytest.mark.parametrize(("name", "argv", "words"), [
    ("table1_mnist", [], ("--data-dir", "RAYTDA_DATA", "raytda-data/mnist")),
    ("table1_mnist", ["--data-dir", "/nonexistent/mnist"], ("/nonexistent/mnist",)),
    ("mask_modes", ["--setting", "mnist-mlp"], ("--data-dir", "RAYTDA_DATA")),
    ("mask_modes", ["--device", "cuda"], ("CUDA is not available", "--device cpu")),
    ("mask_modes", ["--device", "gpu"], ("auto, cpu, cuda, cuda:N",)),
])
def test_bad_flags_fail_with_one_line(home, capsys, tmp_path, name, argv, words):
    out = tmp_path / "out"
    assert script(name).main([*argv, "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"{name}.py: error: "), err
    assert all(w in err[0] for w in words), err[0]
    assert not out.exists()


def test_figure2_cpu_defaults_and_full_scale():
    f2 = script("figure2_forward_only")
    cpu, full = f2.parse_args([]), f2.parse_args(["--full"])
    assert (cpu.n_train, cpu.n_test, cpu.I, cpu.D) == (1000, 200, 1, "3,10")
    assert (full.n_train, full.n_test, full.I, full.D) == (5000, 500, 5, "3,10,25")
    kinds = {e.kind for e in f2.ensembles(cpu)}
    assert {"dropout", "dropout-forward", "dropout-forward-shared", "naive"} <= kinds


def test_table1_main_table_is_one_model_per_subset(home):
    t1 = script("table1_mnist")
    a = t1.parse_args(["--data-dir", str(home), "--lds-replicates", "3"])
    assert t1.build(a).spec.lds.models_per_subset == 1
    truth = t1.build_truth(a)
    assert truth.spec.lds.models_per_subset == 3 and len(truth.spec.ensembles) == 1
