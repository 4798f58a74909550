"""The data is part of what a Task's keys say: change one value, under the same name and
version, and nothing stored for the old data is read; leave it, and everything is reused.
Bad rows fail in one line before anything is written, on either executor."""

from __future__ import annotations

import pytest
import torch
from test_user_task import GatedTask, blobs

from raytda import LDSSpec, Sweep
from raytda.cli import main
from raytda.methods import Method
from raytda.plan.planner import collect
from raytda.specs import SpecError

TRAK = Method("trak", proj_dim=8)
ENSEMBLES = ["naive:I=1", "dropout:I=1,D=2"]
LDS = LDSSpec(m=3)
#: artifacts keyed by the train side only (Task.train_key); every other kind is test-side
TRAIN_SIDE = {"model", "q", "basemodel", "adapter"}


class EditableTask(GatedTask):
    """Same name and version whatever data it is given (the trap: a fixed file edited)."""

    name = "editable-blobs"

    def __init__(self, train=None, test=None) -> None:
        self._train = train if train is not None else blobs(24, 0)
        self._test = test if test is not None else blobs(5, 1)

    def train_data(self):
        return self._train

    def test_data(self):
        return self._test


def sweep(task, store, executor="local") -> Sweep:
    return Sweep(task, TRAK, ENSEMBLES, lds=LDS, store=str(store), executor=executor,
                 progress=False)


def keys_by_kind(s: Sweep) -> dict[str, set[str]]:
    """Every job the sweep needs, cached or not."""
    out: dict[str, set[str]] = {}
    for job in collect(s.spec.evaluations()):
        out.setdefault(job.kind, set()).add(job.key)
    return out


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    s = sweep(EditableTask(), store)
    df = s.run()
    return store, s, df


def test_unchanged_data_keeps_every_key_and_reuses_everything(first):
    store, s, _ = first
    again = sweep(EditableTask(), store)
    again.check()
    assert keys_by_kind(again) == keys_by_kind(s)
    assert again.plan().todo == []


def test_one_train_value_changed_gives_new_keys_for_every_artifact(first):
    store, s, df = first
    x, y = blobs(24, 0)
    x = x.clone()
    x[17, 3] += 0.5  # one value of one row
    changed = sweep(EditableTask(train=(x, y)), store)
    changed.check()
    old, new = keys_by_kind(s), keys_by_kind(changed)
    assert old.keys() == new.keys()
    for kind in old:  # the test side is made from train-side models: all of it is new
        assert not old[kind] & new[kind], kind
    plan = changed.plan()
    assert not plan.cached and {j.key for j in plan.jobs} == set().union(*new.values())
    df2 = changed.run()
    assert (df2["key"].values != df["key"].values).all()


def test_one_test_label_changed_renews_only_test_side_artifacts(first):
    store, s, _ = first
    x, y = blobs(5, 1)
    y = y.clone()
    y[2] = (y[2] + 1) % 3
    changed = sweep(EditableTask(test=(x, y)), store)
    changed.check()
    old, new = keys_by_kind(s), keys_by_kind(changed)
    for kind in old:
        if kind in TRAIN_SIDE:
            assert old[kind] == new[kind], kind
        else:
            assert not old[kind] & new[kind], kind
    plan = changed.plan()
    assert {j.kind for j in plan.todo} == set(old) - TRAIN_SIDE
    assert all(j.key in plan.cached for j in plan.jobs if j.kind in TRAIN_SIDE)
    assert {j.kind for j in plan.jobs if j.key in plan.cached} <= TRAIN_SIDE


def test_a_second_run_of_one_task_object_sees_data_edited_in_place(tmp_path):
    """The fingerprint is taken afresh by every run's check, not once per object."""
    task = EditableTask()
    s = sweep(task, tmp_path / "a")
    s.check()
    before = keys_by_kind(s)
    task._train[0][3, 0] += 1.0
    s.check()
    assert not before["model"] & keys_by_kind(s)["model"]


# --------------------------------------------------------------------------- bad rows


def with_value(split: str, row: int, col: int | None, value) -> EditableTask:
    x, y = blobs(24 if split == "train" else 5, 0 if split == "train" else 1)
    x, y = x.clone(), y.clone()
    if col is None:
        y = y.float() if isinstance(value, float) else y
        y[row] = value
    else:
        x[row, col] = value
    return EditableTask(**{split: (x, y)})


class ShapeTask(EditableTask):
    def test_data(self):
        x, y = blobs(5, 1)
        return x[:, :5], y  # one feature short: the model cannot take it


class DatasetTask(EditableTask):
    """The train set as a torch Dataset, with a label out of range deep inside."""

    def train_data(self):
        x, y = blobs(24, 0)
        y = y.clone()
        y[21] = 3

        class Rows(torch.utils.data.Dataset):
            def __len__(self):
                return len(x)

            def __getitem__(self, i):
                return x[i], y[i]

        return Rows()


BAD = {
    "float test labels": (lambda: with_value("test", 1, None, 1.5), "test row 0: targets are float32"),
    "negative test label": (lambda: with_value("test", 3, None, -2), "test row 3: label -2"),
    "nan train input": (lambda: with_value("train", 9, 2, float("nan")), "train row 9: input holds nan"),
    "inf test input": (lambda: with_value("test", 4, 0, float("inf")), "test row 4: input holds inf"),
    "label deep in train": (lambda: with_value("train", 20, None, 5), "train row 20: label 5"),
    "wrong test shape": (lambda: ShapeTask(), "the model fails on test rows 0..1"),
    "dataset label": (lambda: DatasetTask(), "train row 21: label 3 is outside 0..2"),
}


def assert_fails_cleanly(run, store, expect: str) -> None:
    with pytest.raises(SpecError) as e:
        run()
    msg = str(e.value)
    assert expect in msg and "\n" not in msg, msg
    assert not store.exists() or not any(store.iterdir()), "something was written"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_rows_fail_in_one_line_before_any_work(case, tmp_path):
    make, expect = BAD[case]
    store = tmp_path / "store"
    assert_fails_cleanly(lambda: sweep(make(), store).run(), store, expect)


@pytest.mark.ray
@pytest.mark.parametrize("case", ["label deep in train", "dataset label", "wrong test shape"])
def test_bad_rows_fail_the_same_on_the_ray_executor(case, ray_session, tmp_path):
    from raytda.run.ray_executor import RayExecutor

    make, expect = BAD[case]
    store = tmp_path / "store"
    ex = RayExecutor(progress=False, shutdown=False)
    assert_fails_cleanly(lambda: sweep(make(), store, ex).run(), store, expect)


TASK_FILE = '''
import torch
from test_user_task import GatedTask, blobs


class {name}(GatedTask):
    name = "cli-bad-rows"

    def train_data(self):
        x, y = blobs(24, 0)
        {edit}
        return x, y

    def test_data(self):
        return blobs(5, 1)
'''

CLI_CASES = {
    "NanInput": ("x[11, 1] = float('nan')", "train row 11: input holds nan"),
    "FloatLabels": ("y = y.float()", "train row 0: targets are float32"),
    "DeepLabel": ("y[23] = 9", "train row 23: label 9"),
}


@pytest.mark.parametrize("cls", sorted(CLI_CASES))
def test_bad_rows_through_the_cli_are_one_error_line(cls, tmp_path, capsys, monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    edit, expect = CLI_CASES[cls]
    path = tmp_path / "bad_task.py"
    path.write_text(TASK_FILE.format(name=cls, edit=edit))
    out = tmp_path / "out"
    code = main(["sweep", "--task", f"{path}:{cls}", "--ensemble", "naive:I=1", "--lds-m", "3",
                 "--proj-dim", "8", "--out", str(out), "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("raytda: error: "), err
    assert expect in err[0]
    assert not out.exists() or not any(out.rglob("*.st")), "an artifact was written"
    sys.modules.pop("bad_task", None)
