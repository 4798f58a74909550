"""The bad-input table: every malformed invocation and malformed data row that once got
through (issue 27, section 5) is one ``raytda: error:`` line on stderr, a non-zero exit,
no traceback, and nothing written: the --out directory absent, a store left as it was.

Each case runs ``raytda.cli.main`` in-process; the data cases load the Tasks of
``tests/bad_rows_task.py``, whose rows fail the checks that run before any work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from raytda.cli import main

HERE = Path(__file__).resolve().parent
BAD_ROWS = HERE / "bad_rows_task.py"


def sweep(*extra: str) -> Callable[[Path], list[str]]:
    """`raytda sweep` of a tiny built-in setting with ``extra`` flags, writing to OUT."""
    return lambda tmp: ["sweep", "--setting", "toy-mlp", "--lds-m", "3", "--quiet",
                        "--device", "cpu", "--out", str(tmp / "out"), *extra]


def plan(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["plan", "--setting", "toy-mlp", "--lds-m", "3", "--quiet",
                        "--device", "cpu", "--out", str(tmp / "out"), *extra]


def task_file(name: str, text: str) -> Callable[[Path], list[str]]:
    """`raytda sweep --task FILE:T` of a task file holding ``text``."""
    def argv(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_text(text)
        return sweep("--task", f"{path}:T", "--ensemble", "naive:I=1")(tmp)
    return argv


def sweep_file(text: str) -> Callable[[Path], list[str]]:
    """`raytda sweep --config FILE` of a sweep file holding ``text``."""
    def argv(tmp: Path) -> list[str]:
        path = tmp / "sweep.yaml"
        path.write_text(text)
        return sweep("--config", str(path))(tmp)
    return argv


def bad_rows(cls: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["sweep", "--task", f"{BAD_ROWS}:{cls}", "--ensemble", "naive:I=1",
                        "--lds-m", "3", "--quiet", "--device", "cpu", "--out",
                        str(tmp / "out")]


def not_a_store(command: str, holds_a_store: bool = False) -> Callable[[Path], list[str]]:
    """`raytda store verify|gc DIR` on a directory of other files (JSON among them: gc
    must not take them for records); with ``holds_a_store``, DIR is a run directory
    whose store/ is the store meant."""
    def argv(tmp: Path) -> list[str]:
        target = tmp / "out"
        (target / "notes").mkdir(parents=True)
        (target / "notes" / "config.json").write_text("{}")
        (target / "readme.txt").write_text("not a store")
        if holds_a_store:
            (target / "store" / "model").mkdir(parents=True)
            (target / "store" / "model" / "model-0123.json").write_text("{}")
        return ["store", command, str(target)]
    return argv


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # ensemble text: the number of models is never implied, and the fix is shown
    "ensemble kind alone": (sweep("--ensemble", "naive"),
                            "ensemble 'naive' does not set I (number of trained models); "
                            "write e.g. 'naive:I=1'"),
    "ensemble kind and colon": (sweep("--ensemble", "naive:"), "write e.g. 'naive:I=1'"),
    "ensemble trailing comma": (sweep("--ensemble", "naive:I=1,"),
                                "has an empty field (a trailing or doubled comma); write "
                                "e.g. 'naive:I=1'"),
    "dropout without I": (sweep("--ensemble", "dropout:D=5"), "write e.g. 'dropout:I=1,D=5'"),
    "configuration without I": (sweep("--configuration", "trak@naive"),
                                "write e.g. 'naive:I=1'"),
    "sweep file ensemble without I": (sweep_file("ensembles: [{kind: dropout, D: 5}]\n"),
                                      "write e.g. {kind: dropout, I: 1, D: 5}"),
    # sizes too large to plan: refused before anything is enumerated
    "sweep I past int64": (sweep("--ensemble", "naive:I=99999999999999999999"),
                           "more than the limit of 100,000; make the grid smaller, or if "
                           "you mean it, raise the limit with RAYTDA_MAX_JOBS="),
    "plan I=100000": (plan("--ensemble", "naive:I=100000"),
                      "up to 300,004 jobs (trak x naive I=100000 alone: 300,001)"),
    "LDS subsets past the limit": (plan("--ensemble", "naive:I=1", "--lds-m", "1000000"),
                                   "(1000000 LDS subsets x 1 model(s) alone: 1,000,000)"),
    "projection past the memory budget": (sweep("--ensemble", "naive:I=1", "--proj-dim",
                                                "1000000000"),
                                          "trak's 1,000,000,000 feature dimensions take 3.7 "
                                          "GiB a train row, more than a train shard may hold "
                                          "under the memory budget (2.0 GiB)"),
    "projection past a smaller budget": (sweep("--ensemble", "naive:I=1", "--proj-dim",
                                               "100000000", "--memory-budget", "1GiB"),
                                         "or raise --memory-budget"),
    # --task files that fail while loading: file:line and the exception
    "task file syntax error": (task_file("syntax.py", "import torch\n\ndef f(:\n    pass\n"),
                               "syntax.py:3: SyntaxError: invalid syntax"),
    "task file raises at import": (task_file("raises.py", "x = 1\n\nraise RuntimeError("
                                             "'needs a GPU node')\n"),
                                   "raises.py:3: RuntimeError: needs a GPU node"),
    "task class raises when made": (task_file("init.py", "from raytda import Task\n\n"
                                              "class T(Task):\n    def __init__(self):\n"
                                              "        raise ValueError('no config')\n"),
                                    "T() fails: "),
    # store commands on what is not a store
    "verify a directory that is not a store": (not_a_store("verify"),
                                               "is not a raytda artifact store"),
    "gc a directory that is not a store": (not_a_store("gc"), "is not a raytda artifact store"),
    "verify a run directory": (not_a_store("verify", holds_a_store=True),
                               "/out/store (the store of the run directory"),
    # argparse: one line naming the (sub)command and its --help
    "no command": (lambda tmp: [], "the following arguments are required: COMMAND; see "
                                   "`raytda --help`"),
    "unknown command": (lambda tmp: ["sweeep"], "invalid choice: 'sweeep'"),
    "unknown flag after sweep": (sweep("--bogus"), "sweep: unrecognized arguments: --bogus; "
                                                   "see `raytda sweep --help`"),
    "bad value after plan": (plan("--proj-dim", "many"), "plan: argument --proj-dim: invalid "
                                                         "int value: 'many'; see `raytda plan "
                                                         "--help`"),
    "unknown flag after store verify": (lambda tmp: ["store", "verify", str(tmp / "out"),
                                                     "--fix"],
                                        "store verify: unrecognized arguments: --fix; see "
                                        "`raytda store verify --help`"),
    # data rows: each names the row (tests/bad_rows_task.py breaks train row 5 or 0)
    "attention_mask shorter than input_ids": (bad_rows("ShortMask"),
                                              "train row 5: 'attention_mask' has 2 positions "
                                              "but 'input_ids' has 4"),
    "attention_mask longer than input_ids": (bad_rows("LongMask"),
                                             "train row 5: 'attention_mask' has 5 positions "
                                             "but 'input_ids' has 4"),
    "short mask in the probed row": (bad_rows("ShortMaskInProbe"),
                                     "train row 0: 'attention_mask' has 3 positions"),
    "every label -100": (bad_rows("AllIgnored"),
                         "train row 5: every target is -100 (the ignore index), so the row "
                         "has nothing to attribute"),
    "token id past the vocabulary": (bad_rows("IdBeyondVocab"),
                                     "train row 5: 'input_ids' holds token id 16, outside the "
                                     "model's vocabulary 0..15"),
    "token id past the vocabulary in the probed row": (bad_rows("IdBeyondVocabInProbe"),
                                                       "train row 0: 'input_ids' holds token "
                                                       "id 16"),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAYTDA_MAX_JOBS", raising=False)
    make_argv, needle = CASES[case]
    argv = make_argv(tmp_path)
    out = tmp_path / "out"
    before = _snapshot(out) if out.exists() else None
    code = main(argv)
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code != 0, captured
    assert len(lines) == 1 and lines[0].startswith("raytda: error: "), captured.err
    assert "Traceback" not in captured.err and "usage:" not in captured.err
    assert needle in lines[0], lines[0]
    if before is None:
        assert not out.exists(), f"{case}: {sorted(p.name for p in out.rglob('*'))}"
    else:  # the directory given to a store command is left as it was
        assert _snapshot(out) == before


def test_the_job_limit_is_raised_by_its_environment_variable(monkeypatch):
    """The limit the error names is the one applied, and the variable it names raises it."""
    from raytda.ensembles import Ensemble
    from raytda.methods import Method
    from raytda.plan.planner import check_size, job_bound
    from raytda.specs import SpecError

    pairs = [(Method("trak"), Ensemble("dropout", 4, 10))]
    needed = job_bound(*pairs[0])
    assert needed == 4 + 2 * 40 + 1  # models, a block and a Q job per member, the result
    monkeypatch.setenv("RAYTDA_MAX_JOBS", str(needed - 1))
    with pytest.raises(SpecError, match=f"limit of {needed - 1:,}.*RAYTDA_MAX_JOBS={needed}$"):
        check_size(("one task",), pairs, None)
    monkeypatch.setenv("RAYTDA_MAX_JOBS", str(needed))
    check_size(("one task",), pairs, None)
    monkeypatch.setenv("RAYTDA_MAX_JOBS", "lots")
    with pytest.raises(SpecError, match="RAYTDA_MAX_JOBS='lots' is not a positive integer"):
        check_size(("one task",), pairs, None)


def test_a_task_file_that_failed_to_load_is_not_left_importable(tmp_path, capsys):
    """A half-run module stays out of sys.modules: fixing the file and running again
    loads the fixed file."""
    import sys

    path = tmp_path / "fixme_task.py"
    path.write_text("raise RuntimeError('first try')\n")
    assert main(["plan", "--task", f"{path}:T", "--out", str(tmp_path / "out")]) == 2
    assert "fixme_task" not in sys.modules
    assert "first try" in capsys.readouterr().err

