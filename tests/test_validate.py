"""Bad input gets one clear error before any work starts, and nothing is written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_user_task import GatedNet, GatedTask
from torch import nn

from raytda import GroundTruth, LDSSpec, Sweep
from raytda.cli import main
from raytda.core.checkpoint import CheckpointError, save_checkpoint
from raytda.core.outputs import ModelOutput, margin, one_minus_p
from raytda.specs import SpecError


class NoDropoutTask(GatedTask):
    name = "no-dropout"

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


class BadOutputTask(GatedTask):
    name = "bad-output"

    def output(self) -> ModelOutput:
        return ModelOutput("whole-batch margin", lambda logits, y: margin(logits, y).sum(),
                           one_minus_p)


class NamelessTask(GatedTask):
    name = ""


class CheckpointTask(GatedTask):
    """Attribution over the user's own checkpoints (set by the test)."""

    name = "own-checkpoints"
    recipe = None
    runs: list = []

    def checkpoints(self):
        return self.runs


def fails_cleanly(make_sweep, store, error=SpecError, match=""):
    with pytest.raises(error, match=match):
        make_sweep(str(store)).run()
    assert not store.exists(), "nothing may be written before the input is checked"


def test_dropout_ensemble_on_a_model_without_dropout(tmp_path):
    fails_cleanly(lambda s: Sweep(NoDropoutTask(), ensembles=["dropout:I=1,D=3"], store=s),
                  tmp_path / "st", match="dropout I=1 D=3 needs dropout, but task 'no-dropout'")


def test_an_output_function_of_the_wrong_shape(tmp_path):
    fails_cleanly(lambda s: Sweep(BadOutputTask(), ensembles=["naive:I=1"], store=s),
                  tmp_path / "st", match=r"f must return one value per sample, shape \(2,\), got \(\)")


def test_a_task_without_a_key():
    with pytest.raises(SpecError, match="NamelessTask has no key: set the class attribute 'name'"):
        Sweep(NamelessTask(), ensembles=["naive:I=1"], store="/unused")


def test_checkpoints_that_do_not_fit_the_model(tmp_path):
    wrong = GatedNet(width=5).state_dict()
    save_checkpoint(tmp_path / "wrong.safetensors", wrong)
    task = CheckpointTask()
    task.runs = [[str(tmp_path / "wrong.safetensors")]]
    fails_cleanly(lambda s: Sweep(task, ensembles=["naive:I=1"], lds=None, store=s),
                  tmp_path / "st", CheckpointError,
                  match=r"does not fit 'own-checkpoints'.*inp.weight: checkpoint \(5, 6\) vs "
                        r"model \(12, 6\)")


def test_ground_truth_of_the_wrong_shape(tmp_path):
    subsets = np.zeros((4, 32), dtype=bool)
    subsets[:, ::2] = True
    truth = GroundTruth(subsets, np.zeros((4, 5)))  # the task has 6 test samples
    fails_cleanly(lambda s: Sweep(GatedTask(), ensembles=["naive:I=1"], lds=truth, store=s),
                  tmp_path / "st", match=r"cover 5 test samples but the task has 6")
    with pytest.raises(SpecError, match=r"must be \(m subsets, n_test\) = \(4, n_test\)"):
        GroundTruth(subsets, np.zeros((3, 6)))


def test_lds_needs_a_task_that_can_train():
    task = CheckpointTask()
    task.runs = [[GatedNet().state_dict()]]
    with pytest.raises(SpecError, match="pass ground truth you have"):
        Sweep(task, ensembles=["naive:I=1"], lds=LDSSpec(m=3), store="/unused")


def test_cli_prints_one_error_line_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "my_task.py"
    src.write_text("from test_validate import NoDropoutTask as MyTask\n")
    out = tmp_path / "out"
    code = main(["sweep", "--task", f"{src}:MyTask", "--ensemble", "dropout:I=1,D=2",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("raytda: error: dropout I=1 D=2")
    assert not out.exists()


def test_user_checkpoints_need_no_training_and_carry_their_epochs(tmp_path):
    """Three checkpoints of one run are checkpoint members; nothing is trained."""
    torch.manual_seed(0)
    task = CheckpointTask()
    task.runs = [[GatedNet().state_dict() for _ in range(3)], [GatedNet().state_dict()] * 3]
    sweep = Sweep(task, "trak", ["naive:I=2", "checkpoints:I=2,C=3", "dropout:I=1,D=2"],
                  lds=None, store=str(tmp_path / "st"), proj_dim=16, progress=False)
    kinds = {j.kind for j in sweep.plan().jobs}
    assert kinds == {"model", "block", "q", "result"}  # imported models; no LDS models
    df = sweep.run()
    assert (df["train_time_s"] == 0).all() and df["lds"].isna().all()
    s = sweep.scores("checkpoints:I=2,C=3")
    assert s.shape == (6, 32) and torch.isfinite(s).all()
    # The second run hands one state dict three times: its checkpoint members coincide.
    per_ckpt = Sweep(task, "trak", ["checkpoints:I=2,C=1"], lds=None,
                     store=str(tmp_path / "st"), proj_dim=16, progress=False)
    assert [j.kind for j in per_ckpt.plan().todo] == ["result"]  # all shared, nothing new
