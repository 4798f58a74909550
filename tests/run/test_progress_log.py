"""The default sweep's log as `kubectl logs` or `ray job logs` show it: `raytda sweep` with
stdout and stderr to a pipe writes one timestamped line per progress report and log
record, none but the cost line longer than 200 characters, and no carriage-return bar."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
PROGRESS = re.compile(rf"^{STAMP} raytda: (\d+)/(\d+) jobs done, \d+ running, \d+ cached, "
                      rf"(\d+) failed, (ETA \S+|in \S+)(; running: .+)?$")
RECORD = re.compile(rf"^{STAMP} raytda(\.\w+)+ (DEBUG|INFO|WARNING|ERROR): ")
ESTIMATE = re.compile(rf"^{STAMP} raytda: to run: \d+ jobs \(.+\); about .+ on disk; .+$")


def test_default_sweep_logs_through_a_pipe(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    # Often enough that a small sweep reports several times while it runs.
    env.update(PYTHONPATH=str(root), RAYTDA_PROGRESS_INTERVAL_S="0.5")
    # The default sweep (setting, method, ensemble grid), on a few samples and LDS models.
    argv = [sys.executable, "-m", "raytda.cli", "--log-level", "info", "sweep", "--n-train",
            "60", "--n-test", "12", "--epochs", "2", "--lds-m", "3", "--proj-dim", "8",
            "--out", str(tmp_path / "out")]
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         env=env, cwd=root, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "\r" not in res.stderr
    lines = res.stderr.splitlines()
    progress = [PROGRESS.match(ln) for ln in lines if " jobs done, " in ln]
    for ln in lines:
        # progress and records are clipped; the cost line is kept whole in a log
        assert len(ln) <= 200 or ESTIMATE.match(ln), ln
        assert PROGRESS.match(ln) or RECORD.match(ln) or ESTIMATE.match(ln), \
            f"not a timestamped line: {ln!r}"
        assert ln.count(" jobs done, ") <= 1, f"two reports on one line: {ln!r}"
    assert len(progress) >= 3 and all(progress)
    # what the run will cost, once, before its first progress line
    estimates = [i for i, ln in enumerate(lines) if ESTIMATE.match(ln)]
    first = next(i for i, ln in enumerate(lines) if " jobs done, " in ln)
    assert len(estimates) == 1 and estimates[0] < first, lines[:first + 1]
    done = [int(m.group(1)) for m in progress]
    total = int(progress[-1].group(2))
    assert done == sorted(done), "done counts went backwards"
    assert progress[0].group(4) == "ETA ?" and done[0] == 0
    assert done[-1] == total and progress[-1].group(4).startswith("in ")
    assert {m.group(3) for m in progress} == {"0"}
    # --log-level info: a record per job run, named by its description.
    ran = [ln for ln in lines if " INFO: ran " in ln]
    assert len(ran) == total
    assert any("ran train model 0 of digits-mlp in " in ln for ln in ran)
    assert not any(" None" in ln for ln in ran), "unused fields leaked into job labels"
