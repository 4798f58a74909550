"""raytda's log setup: one handler however often it is configured, timestamped records
at the chosen level, and a clear error for an unknown level."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from raytda.run.logs import configure_logging, current_level, level_number
from raytda.specs import SpecError


@pytest.fixture
def restore_raytda_logger():
    logger = logging.getLogger("raytda")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_records_are_timestamped_lines_at_the_chosen_level(restore_raytda_logger, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    configure_logging("info")
    configure_logging("info")  # a second call replaces the handler, it adds none
    assert len(restore_raytda_logger.handlers) == 1
    assert current_level() == logging.INFO
    log = logging.getLogger("raytda.run.some_module")
    log.debug("not shown")
    log.info("ran train model 0 of toy-mlp in %.1f s", 1.25)
    err = sys.stderr.getvalue().splitlines()
    assert len(err) == 1
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d raytda\.run\.some_module INFO: ran train "
                    r"model 0 of toy-mlp in 1\.2 s$", err[0]), err


def test_an_unknown_level_is_a_spec_error():
    assert level_number("debug") == logging.DEBUG and level_number(logging.ERROR) == logging.ERROR
    with pytest.raises(SpecError, match="use one of debug, info, warning, error"):
        level_number("verbose")
