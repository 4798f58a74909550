"""Data directory resolution: --data-dir, then $RAYTDA_DATA/<name>, then ~/raytda-data/<name>;
a missing directory is one DataError line naming the flag and the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytda.data import DataError
from raytda.data.location import data_dir, optional_data_dir


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """A fake home (so ~ never means the real one) and no RAYTDA_DATA."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAYTDA_DATA", raising=False)
    return home


def test_given_directory_wins(env, tmp_path, monkeypatch):
    given = tmp_path / "mine"
    given.mkdir()
    (tmp_path / "shared" / "mnist").mkdir(parents=True)
    monkeypatch.setenv("RAYTDA_DATA", str(tmp_path / "shared"))
    assert data_dir("mnist", str(given)) == given.resolve()


def test_environment_variable_then_default(env, tmp_path, monkeypatch):
    (env / "raytda-data" / "mnist").mkdir(parents=True)
    assert data_dir("mnist", None) == (env / "raytda-data" / "mnist").resolve()
    (tmp_path / "shared" / "mnist").mkdir(parents=True)
    monkeypatch.setenv("RAYTDA_DATA", str(tmp_path / "shared"))
    assert data_dir("mnist", None) == (tmp_path / "shared" / "mnist").resolve()


def test_tilde_in_given_path_is_expanded(env):
    (env / "d").mkdir()
    assert data_dir("mnist", "~/d") == (env / "d").resolve()


@pytest.mark.parametrize("where", ["given", "env", "default"])
def test_missing_directory_is_one_line(env, tmp_path, monkeypatch, where):
    given = str(tmp_path / "nope") if where == "given" else None
    if where == "env":
        monkeypatch.setenv("RAYTDA_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        data_dir("mnist", given)
    msg = str(err.value)
    assert "\n" not in msg and "--data-dir" in msg and "RAYTDA_DATA" in msg
    assert {"given": "from --data-dir", "env": "from $RAYTDA_DATA/mnist",
            "default": "~/raytda-data/mnist"}[where] in msg


def test_data_without_files_needs_no_directory(env):
    from raytda.tasks import task_class

    # digits-mlp and toy-mlp read no files; the paper's data sets do
    assert optional_data_dir(task_class("digits-mlp").DATA_NAME, None) is None
    assert optional_data_dir(task_class("toy-mlp").DATA_NAME, None) is None
    with pytest.raises(DataError):
        optional_data_dir(task_class("mnist-mlp").DATA_NAME, None)
    (env / "raytda-data" / "shakespeare").mkdir(parents=True)
    assert (optional_data_dir(task_class("shakespeare-gpt").DATA_NAME, None)
            == (env / "raytda-data" / "shakespeare").resolve())
