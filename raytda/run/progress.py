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

Counts cover every job of the plan: ``done`` includes the ``cached`` ones (found in the
store at planning or at run time), and the ETA extrapolates the jobs settled so far in
this run. Job labels are the jobs' own ``describe()``, cleaned for reading
(:func:`job_label`); this module asks nothing else of a job.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from raytda.run.logs import DATE_FORMAT
from raytda.specs import SpecError

if TYPE_CHECKING:
    from raytda.plan.jobs import Job

#: longest progress line written to a log, timestamp included
MAX_LINE = 200
#: seconds between progress lines when stderr is not a terminal, unless the environment
#: variable of this name says otherwise
INTERVAL_ENV = "RAYTDA_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 15.0

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


class ProgressBar:
    """A tqdm bar on the terminal; its postfix names what runs."""

    def __init__(self, counts: JobCounts, desc: str = "raytda jobs") -> None:
        from tqdm.auto import tqdm

        # initial: tqdm's rate and ETA count this run's jobs, not the cached ones
        self._bar = tqdm(total=counts.total, initial=counts.settled, desc=desc, unit="job")

    def update(self, counts: JobCounts, running: Sequence[str] = ()) -> None:
        bar = self._bar
        bar.total, bar.n = counts.total, counts.settled
        status = f"{counts.running} running, {counts.cached} cached, {counts.failed} failed"
        now = f"; {running[0]}" if running else ""
        bar.set_postfix_str(clip(status + now, 60), refresh=False)
        bar.refresh()

    def close(self) -> None:
        self._bar.close()  # ends the bar's line, so that an error starts its own


class ProgressLines:
    """Timestamped progress lines for logs: at the start, every ``interval_s`` seconds
    (from a timer thread, so a long job does not silence the log), when a job fails, and
    at the end."""

    def __init__(self, counts: JobCounts, interval_s: float | None = None,
                 clock=time.monotonic) -> None:
        self.interval_s = progress_interval() if interval_s is None else interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._first, self._t0 = counts, clock()
        self._counts, self._running = counts, ()
        self._stop = threading.Event()
        self._write(self.line(counts, ()))
        self._timer = threading.Thread(target=self._tick, name="raytda-progress", daemon=True)
        self._timer.start()

    def eta(self, counts: JobCounts) -> str:
        """Time left, from this run's settled jobs so far; ``?`` before the first."""
        settled = counts.settled - self._first.settled
        left = counts.total - counts.settled
        if left <= 0:
            return "0s"
        if settled <= 0:
            return "?"
        return format_duration(left * (self._clock() - self._t0) / settled)

    def line(self, counts: JobCounts, running: Sequence[str], final: bool = False) -> str:
        """One progress line, at most :data:`MAX_LINE` characters."""
        stamp = time.strftime(DATE_FORMAT)
        when = (f"in {format_duration(self._clock() - self._t0)}" if final
                else f"ETA {self.eta(counts)}")
        head = (f"{stamp} raytda: {counts.done}/{counts.total} jobs done, {counts.running} "
                f"running, {counts.cached} cached, {counts.failed} failed, {when}")
        if running and not final:
            more = f", +{len(running) - 1} more" if len(running) > 1 else ""
            room = MAX_LINE - len(head) - len("; running: ") - len(more)
            if room >= 12:
                head += f"; running: {clip(running[0], room)}{more}"
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


def open_progress(counts: JobCounts, enabled: bool = True, desc: str = "raytda jobs"
                  ) -> Progress:
    """A bar when stderr is a terminal, timestamped lines when it is not, or nothing."""
    if not enabled:
        return NoProgress()
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        return ProgressBar(counts, desc)
    return ProgressLines(counts)
