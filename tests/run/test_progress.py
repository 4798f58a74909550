"""Progress for people and for logs: readable job labels, timestamped lines of bounded
length when stderr is not a terminal, a bar when it is."""

from __future__ import annotations

import io
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from raytda.plan.job import Job
from raytda.run.progress import (
    MAX_LINE,
    JobCounts,
    NoProgress,
    ProgressBar,
    ProgressLines,
    format_duration,
    job_label,
    open_progress,
    progress_interval,
)
from raytda.specs import SpecError

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d raytda: (\d+)/(\d+) jobs done, (\d+) "
                  r"running, (\d+) cached, (\d+) failed, (ETA \S+|in \S+)(; running: .+)?$")


@dataclass(frozen=True, repr=False)
class Described(Job):
    """A job that only describes itself."""

    text: str
    kind: str = field(default="probe", init=False)

    def spec(self) -> dict[str, Any]:
        return {"text": self.text}

    def describe(self) -> str:
        return self.text


def test_labels_drop_unused_fields_and_keep_the_rest():
    got = job_label(Described("trak block model 2 ckpt None mask None proj 0"))
    assert got == "trak block model 2 proj 0"
    assert job_label(Described("Q of model 0 mask None adapter 1")) == "Q of model 0 adapter 1"
    # A field whose value merely starts with None is a value, not an unused field.
    assert job_label(Described("train model 3 of Nonesuch")) == "train model 3 of Nonesuch"
    long = job_label(Described("evaluate " + "x" * 300), width=50)
    assert len(long) == 50 and long.endswith("...")


def test_durations_read_as_hours_minutes_seconds():
    assert [format_duration(s) for s in (0, 45, 190, 3720)] == ["0s", "45s", "3m10s", "1h02m"]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def lines_of(err: str) -> list[str]:
    return [ln for ln in err.split("\n") if ln]


def test_lines_are_timestamped_bounded_and_tell_failures_at_once(capsys):
    clock = Clock()
    # A long interval: every line here comes from the start, a failure or the end.
    p = ProgressLines(JobCounts(total=40, done=10, cached=10), interval_s=3600, clock=clock)
    start = lines_of(capsys.readouterr().err)
    assert len(start) == 1 and LINE.match(start[0]).group(6) == "ETA ?", start
    clock.t += 30
    p.update(JobCounts(total=40, done=25, cached=10, running=3), ["train model 7 of " + "y" * 400,
                                                                   "b", "c"])
    assert lines_of(capsys.readouterr().err) == [], "no line before the interval or a failure"
    p.update(JobCounts(total=40, done=25, cached=10, running=2, failed=1), ["z" * 400, "b"])
    clock.t += 10
    p.close()
    lines = lines_of(capsys.readouterr().err)
    assert len(lines) == 2  # the failure, the end
    for ln in lines:
        assert len(ln) <= MAX_LINE and "\r" not in ln and LINE.match(ln), ln
    failed = LINE.match(lines[0])
    assert failed.group(5) == "1" and failed.group(7).endswith(", +1 more")
    # No time-left model given: the ETA stays unknown (raytda.run.eta computes it).
    assert failed.group(6) == "ETA ?"
    assert LINE.match(lines[1]).group(6) == "in 40s"


def test_lines_keep_coming_while_a_long_job_runs(capsys):
    p = ProgressLines(JobCounts(total=3), interval_s=0.02)
    p.update(JobCounts(total=3, running=1), ["train model 0 of toy-mlp"])
    # Wait (bounded) for timer lines while nothing changes; no assertion on their timing.
    seen = ""
    for _ in range(1000):
        seen += capsys.readouterr().err
        if seen.count("running: train model 0 of toy-mlp") >= 2:
            break
        time.sleep(0.01)
    p.close()
    assert seen.count("running: train model 0 of toy-mlp") >= 2, seen


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAYTDA_PROGRESS_INTERVAL_S", "2.5")
    assert progress_interval() == 2.5
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("RAYTDA_PROGRESS_INTERVAL_S", bad)
        with pytest.raises(SpecError, match="RAYTDA_PROGRESS_INTERVAL_S"):
            progress_interval()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_lines_elsewhere(monkeypatch):
    counts = JobCounts(total=2)
    assert isinstance(open_progress(counts, enabled=False), NoProgress)
    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = open_progress(counts)
    assert isinstance(bar, ProgressBar)
    bar.update(JobCounts(total=2, done=1, running=1), ["train model 1 of toy-mlp"])
    bar.close()
    assert "\r" in sys.stderr.getvalue() and "1/2" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    lines = open_progress(counts)
    assert isinstance(lines, ProgressLines)
    lines.close()
    assert "\r" not in sys.stderr.getvalue() and len(lines_of(sys.stderr.getvalue())) == 2


def screen_lines(drawn: str) -> list[str]:
    """What a terminal shows line by line of tqdm's output: split at newlines and
    carriage returns, cursor-up sequences dropped, trailing blanking spaces kept (they
    count against the width too)."""
    return [seg for ln in drawn.replace("\x1b[A", "").split("\n") for seg in ln.split("\r")]


NAMES = ["trak features of model 2, checkpoint 3, mask 1 of mnist-mlp",
         "train model 3 of digits-mlp"]


@pytest.mark.parametrize("columns", [80, 200])
def test_the_bar_fits_the_terminal_and_names_the_running_job(monkeypatch, columns):
    from raytda.run.progress import MIN_BAR

    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = open_progress(JobCounts(total=157, done=30, cached=30))
    assert isinstance(bar, ProgressBar)
    bar.update(JobCounts(total=157, done=31, cached=30, running=2), NAMES)
    bar.update(JobCounts(total=157, done=99, cached=30, running=1), NAMES[1:])
    bar.close()
    lines = screen_lines(sys.stderr.getvalue())
    assert all(len(ln) <= columns for ln in lines), max(lines, key=len)
    for name in NAMES:  # each name whole, on some line
        assert any(name in ln for ln in lines), name
    bars = [ln for ln in lines if ln.startswith("raytda jobs ") and "running," in ln]
    assert bars and all(len(ln.split("|")[1]) >= MIN_BAR for ln in bars), bars
    named_beside = [ln for ln in bars if NAMES[1] in ln]
    if columns == 80:  # too narrow for both: the name has its own line
        assert not named_beside
        assert any(ln.startswith(f"running: {NAMES[0]}, +1 more") for ln in lines), lines
    else:
        assert named_beside


def test_lines_show_the_time_left_the_executor_measures(capsys):
    from raytda.run.eta import UnitCostETA

    clock = Clock()
    jobs = [Described(f"job {i}") for i in range(4)]
    eta = UnitCostETA(jobs, clock, work=lambda j: None)
    p = ProgressLines(JobCounts(total=4), interval_s=3600, clock=clock, eta=eta)
    eta.started(jobs[0])
    clock.t += 50
    eta.stopped(jobs[0].key)
    p.update(JobCounts(total=4, done=1, failed=1))
    p.close()
    lines = lines_of(capsys.readouterr().err)
    assert LINE.match(lines[1]).group(6) == f"ETA {format_duration(3 * 50)}"


def test_the_cost_line_fits_the_terminal_and_is_stamped_in_logs(monkeypatch):
    from raytda.run.progress import announce

    text = ("to run: 173 jobs (55 block, 50 ldsmodel, 11 model, 55 q, 2 result); about "
            "2.3 GB on disk; time not known before the first jobs finish (none like them "
            "timed in this store yet), then the ETA tells")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "stderr", Terminal())
    announce(text)
    lines = sys.stderr.getvalue().splitlines()
    assert len(lines) >= 2 and all(len(ln) <= 80 for ln in lines), lines
    assert " ".join(ln.strip() for ln in lines) == "raytda: " + text
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    announce(text)
    (line,) = lines_of(sys.stderr.getvalue())
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d raytda: to run: 173 jobs ", line)
    assert line.endswith(text)  # whole in a log, never clipped
