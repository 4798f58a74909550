"""Paths given to the driver mean the same on every worker: a Ray sweep started from a
directory other than the Ray runtime's, with a relative --out and --data-dir, gives the
results an absolute-path run gives and writes nothing where the workers run; a path a
node cannot see is one error line before any work."""

from __future__ import annotations

import shutil
import uuid

import pandas as pd
import pytest
from ray_helpers import cli, ray_workers_cwd, write_fake_mnist

from raytda.cli import main

pytestmark = pytest.mark.ray

# mnist-mlp reads its files from --data-dir; fake files at a size that trains in a second.
MNIST = ["--setting", "mnist-mlp", "--n-train", "40", "--n-test", "10", "--epochs", "1",
         "--lds-m", "4", "--proj-dim", "16", "--ensemble", "naive:I=1|2", "--quiet"]


def test_ray_sweep_with_relative_out_and_data_dir_from_another_directory(
        ray_session, gcs_address, tmp_path):
    work = tmp_path / "work"
    write_fake_mnist(work / "data" / "mnist")
    rel = f"runs-{uuid.uuid4().hex[:8]}/x"  # unique: a wrong resolution lands beside Ray
    ray_cwd = ray_workers_cwd(ray_session)
    assert ray_cwd != work
    try:
        proc = cli("sweep", *MNIST, "--out", rel, "--data-dir", "data/mnist",
                   "--address", gcs_address, cwd=work)
        out, err = proc.communicate(timeout=300)
        leaked = (ray_cwd / rel.split("/")[0]).exists()
    finally:
        shutil.rmtree(ray_cwd / rel.split("/")[0], ignore_errors=True)
    assert proc.returncode == 0, err[-3000:]
    assert not leaked, f"the workers wrote under their own working directory {ray_cwd}"
    relative = pd.read_parquet(work / rel / "results.parquet")
    absolute_out = tmp_path / "absolute"
    assert main(["sweep", *MNIST, "--out", str(absolute_out), "--data-dir",
                 str(work / "data" / "mnist")]) == 0
    absolute = pd.read_parquet(absolute_out / "results.parquet")
    assert list(relative["key"]) == list(absolute["key"])
    assert list(relative["lds"]) == list(absolute["lds"])
