"""Progress of a plan's jobs, readable on a terminal and in a log.

On a terminal the executors show a tqdm bar. Anywhere else (``ray job logs``, ``kubectl
logs``, a file, a pipe) a bar's carriage returns pile every redraw onto one line, so
progress is written as whole timestamped lines instead, e.g.::

    2026-12-03 16:40:12 raytda: 12/57 jobs done, 2 running, 30 cached, 0 failed, ETA 3m10s;
    running: train model 3 of digits-mlp, +1 more

(one line in the log, cut here). A line is written when the run starts, every
``RAYTDA_PROGRESS_INTERVAL_S`` seconds (default 15; from a timer thread, so a long job
still shows the sweep is alive), as soon as a job fails, and when the run ends; none is
longer than :data:`MAX_LINE` characters.

On a terminal the bar fits the terminal's width; where that leaves the bar too narrow to
name the running job beside it, the name goes on a line of its own under the bar.

Counts cover every job of the plan: ``done`` includes the ``cached`` ones (found in the
store at planning or at run time). The ETA comes from the measured cost of each class of
job (:class:`raytda.run.eta.UnitCostETA`, which the executor keeps), ``?`` until a job has
finished. Job labels are the jobs' own ``describe()``, cleaned for reading
(:func:`job_label`); this module asks nothing else of a job.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from raytda.run.logs import DATE_FORMAT
from raytda.specs import SpecError

if TYPE_CHECKING:
    from raytda.plan.job import Job
    from raytda.run.eta import UnitCostETA

#: longest progress line written to a log, timestamp included
MAX_LINE = 200
#: seconds between progress lines when stderr is not a terminal, unless the environment
#: variable of this name says otherwise
INTERVAL_ENV = "RAYTDA_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 15.0

#: narrowest bar worth drawing; below it, the running job's name moves to its own line
MIN_BAR = 12
#: the bar line before its status text (ETA, counts, what runs)
BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar}| "
#: room the running job's name needs to be worth showing beside the bar
MIN_NAME = 30

# "ckpt None", "mask None": fields a job's describe() names but this job does not use
_UNUSED_FIELD = re.compile(r"\s+[\w-]+ None\b")


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with ``...`` where it was cut."""
    if len(text) <= width:
        return text
    return text[:max(0, width - 3)].rstrip() + "..." if width >= 3 else text[:width]


def job_label(job: Job, width: int = 100) -> str:
    """A job's ``describe()`` as a label: unused ``<field> None`` pairs dropped, whitespace
    collapsed, at most ``width`` characters."""
    return clip(" ".join(_UNUSED_FIELD.sub("", job.describe()).split()), width)


def packed_note(n: int) -> str:
    """What a log record of a job that ran adds when it trained in a pack of ``n``: the
    time it gives is the pack's."""
    return f" (the pack of {n})" if n > 1 else ""


def format_duration(seconds: float) -> str:
    """``190`` -> ``"3m10s"``, ``45`` -> ``"45s"``, ``3720`` -> ``"1h02m"``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclasses.dataclass(frozen=True)
class JobCounts:
    """Where a plan's jobs stand. ``done`` includes ``cached``; ``total`` grows when a
    corrupt input has to be rebuilt."""

    total: int
    done: int = 0
    cached: int = 0
    running: int = 0
    failed: int = 0

    @property
    def settled(self) -> int:
        return self.done + self.failed


def progress_interval() -> float:
    """Seconds between progress lines: ``RAYTDA_PROGRESS_INTERVAL_S`` or the default."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SpecError(f"{INTERVAL_ENV}={text!r} is not a number of seconds > 0; "
                        f"set it to e.g. 30, or unset it for {DEFAULT_INTERVAL_S:g}")
    return value


class Progress(Protocol):
    """What an executor tells about its run; :func:`open_progress` picks the kind."""

    def update(self, counts: JobCounts, running: Sequence[str] = ()) -> None:
        """The counts now and the labels of the jobs running now."""

    def close(self) -> None:
        """The run is over (finished, failed or interrupted)."""


class NoProgress:
    """Progress off (``--quiet``, ``progress=False``)."""

    def update(self, counts: JobCounts, running: Sequence[str] = ()) -> None:
        pass

    def close(self) -> None:
        pass


def terminal_width(stream=None) -> int:
    """Columns of the terminal ``stream`` (default stderr) draws on: ``$COLUMNS`` where
    set, else the terminal's own size, else 80."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size((stream or sys.stderr).fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a real terminal (a test's stream)
        return shutil.get_terminal_size((80, 24)).columns


def eta_text(eta: UnitCostETA | None) -> str:
    """``ETA 3m10s``, or ``ETA ?`` before the first job has been measured."""
    left = eta.seconds_left() if eta is not None else None
    return "ETA ?" if left is None else f"ETA {format_duration(left)}"


def running_text(running: Sequence[str], width: int) -> str:
    """``running: <first label>, +N more`` in at most ``width`` characters."""
    more = f", +{len(running) - 1} more" if len(running) > 1 else ""
    return clip(f"running: {running[0]}", max(0, width - len(more))) + more


class ProgressBar:
    """A tqdm bar on the terminal, no line wider than the terminal: counts, bar, ETA and
    what runs on one line where the width allows, else the running job's name on a
    second line under the bar."""

    def __init__(self, counts: JobCounts, desc: str = "raytda jobs",
                 eta: UnitCostETA | None = None) -> None:
        from tqdm.auto import tqdm

        self._tqdm, self._eta = tqdm, eta
        # One column short of the width: a line that fills the last column makes some
        # terminals wrap before the carriage return.
        self._width = max(20, terminal_width() - 1)
        # initial: the cached jobs count as done from the start
        self._bar = tqdm(total=counts.total, initial=counts.settled, desc=desc, unit="job",
                         ncols=self._width, bar_format=BAR_FORMAT, dynamic_ncols=False)
        self._status = None  # the line under the bar, while it is needed
        self._desc = desc

    def update(self, counts: JobCounts, running: Sequence[str] = ()) -> None:
        self._width = max(20, terminal_width() - 1)
        bar = self._bar
        bar.total, bar.n, bar.ncols = counts.total, counts.settled, self._width
        status = (f"{eta_text(self._eta)}, {counts.running} running, {counts.cached} cached, "
                  f"{counts.failed} failed")
        # what the bar line holds besides the bar and the status: desc, counts, frame
        frame = len(f"{self._desc} {counts.total}/{counts.total} || ")
        room = self._width - frame - len(status) - len("; ") - MIN_BAR
        if running and room >= MIN_NAME:
            self._close_status()
            status += "; " + running_text(running, room)
        elif running:
            self._show_status(running_text(running, self._width))
        # between two jobs the name line stays as it was: closing and reopening it
        # would make the bar jump
        # In the format itself: tqdm's {postfix} comes with a leading comma.
        text = clip(status, max(10, self._width - frame - MIN_BAR))
        bar.bar_format = BAR_FORMAT + text.replace("{", "{{").replace("}", "}}")
        bar.refresh()

    def _show_status(self, text: str) -> None:
        if self._status is None:
            self._status = self._tqdm(total=0, position=self._bar.pos + 1, bar_format="{desc}",
                                      leave=False, ncols=self._width, dynamic_ncols=False)
        self._status.ncols = self._width
        self._status.set_description_str(text, refresh=True)

    def _close_status(self) -> None:
        if self._status is not None:
            self._status.close()
            self._status = None

    def close(self) -> None:
        self._close_status()
        self._bar.close()  # ends the bar's line, so that an error starts its own


class ProgressLines:
    """Timestamped progress lines for logs: at the start, every ``interval_s`` seconds
    (from a timer thread, so a long job does not silence the log), when a job fails, and
    at the end."""

    def __init__(self, counts: JobCounts, interval_s: float | None = None,
                 clock=time.monotonic, eta: UnitCostETA | None = None) -> None:
        self.interval_s = progress_interval() if interval_s is None else interval_s
        self._clock, self._eta = clock, eta
        self._lock = threading.Lock()
        self._first, self._t0 = counts, clock()
        self._counts, self._running = counts, ()
        self._stop = threading.Event()
        self._write(self.line(counts, ()))
        self._timer = threading.Thread(target=self._tick, name="raytda-progress", daemon=True)
        self._timer.start()

    def line(self, counts: JobCounts, running: Sequence[str], final: bool = False) -> str:
        """One progress line, at most :data:`MAX_LINE` characters."""
        stamp = time.strftime(DATE_FORMAT)
        when = (f"in {format_duration(self._clock() - self._t0)}" if final
                else eta_text(self._eta))
        head = (f"{stamp} raytda: {counts.done}/{counts.total} jobs done, {counts.running} "
                f"running, {counts.cached} cached, {counts.failed} failed, {when}")
        if running and not final:
            room = MAX_LINE - len(head) - len("; ")
            if room >= 12 + len("running: , +N more"):
                head += "; " + running_text(running, room)
        return clip(head, MAX_LINE)

    def update(self, counts: JobCounts, running: Sequence[str] = ()) -> None:
        with self._lock:
            failed = counts.failed > self._counts.failed
            self._counts, self._running = counts, tuple(running)
        if failed:  # worth telling now, not at the next tick
            self._write(self.line(counts, running))

    def close(self) -> None:
        self._stop.set()
        self._timer.join()
        with self._lock:
            counts = self._counts
        self._write(self.line(counts, (), final=True))

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                counts, running = self._counts, self._running
            self._write(self.line(counts, running))

    def _write(self, text: str) -> None:
        with self._lock:
            stream = sys.stderr
            stream.write(text + "\n")
            stream.flush()


def announce(text: str) -> None:
    """One line on stderr before a run: ``raytda: <text>``, timestamped like the progress
    lines where stderr is not a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        # on a terminal, lines that fit it, wrapped at spaces, indented after the first
        import textwrap

        lines = textwrap.wrap(f"raytda: {text}", max(20, terminal_width() - 1),
                              subsequent_indent="  ", break_on_hyphens=False)
        sys.stderr.write("\n".join(lines) + "\n")
    else:
        # whole, not clipped like progress lines: a log keeps what the run will cost
        sys.stderr.write(f"{time.strftime(DATE_FORMAT)} raytda: {text}\n")
    sys.stderr.flush()


def open_progress(counts: JobCounts, enabled: bool = True, desc: str = "raytda jobs",
                  eta: UnitCostETA | None = None) -> Progress:
    """A bar when stderr is a terminal, timestamped lines when it is not, or nothing;
    ``eta``: the executor's measure of the time left (``ETA ?`` without one)."""
    if not enabled:
        return NoProgress()
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        return ProgressBar(counts, desc, eta)
    return ProgressLines(counts, eta=eta)
