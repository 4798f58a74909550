"""How raytda's log records look and where they go.

Every raytda module logs through ``logging.getLogger(__name__)``, so the whole package is
the ``raytda`` logger tree. The command line (``raytda --log-level LEVEL``) and each Ray
actor install one handler on that tree: timestamped lines on stderr, the same timestamp
the progress lines carry (:mod:`raytda.run.progress`), so ``kubectl logs`` and ``ray job
logs`` read as one timeline. A program that uses raytda as a library keeps its own
logging setup; nothing here runs on ``import raytda``.
"""

from __future__ import annotations

import logging
import sys

#: the levels ``--log-level`` takes, quietest last
LEVELS = ("debug", "info", "warning", "error")
#: the timestamp of every log and progress line (local time, to the second)
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at the time the
    handler was made (tests and notebooks swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; ignore that
        pass


def level_number(level: str | int) -> int:
    """``"info"`` -> ``logging.INFO``; a number passes through."""
    if isinstance(level, int):
        return level
    if level.lower() not in LEVELS:
        from raytda.specs import SpecError

        raise SpecError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    return getattr(logging, level.upper())


def configure_logging(level: str | int = "warning") -> None:
    """Send raytda's records at ``level`` and above to stderr as timestamped lines.

    Idempotent: a second call replaces the handler of the first instead of adding one."""
    root = logging.getLogger("raytda")
    root.setLevel(level_number(level))
    for h in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    root.addHandler(handler)


def current_level() -> int:
    """The level raytda's records are logged at in this process (what actors follow)."""
    return logging.getLogger("raytda").getEffectiveLevel()
