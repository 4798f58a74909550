"""Fixtures of the executor tests: the test sweep's in-process reference results and the
address of the session's Ray runtime (for CLI subprocesses to join)."""

from __future__ import annotations

import pytest
from ray_helpers import counts, lds_by_label, make_sweep


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> tuple[dict[str, float], dict[str, int]]:
    """The test sweep run in-process: LDS per configuration and artifact counts."""
    root = tmp_path_factory.mktemp("reference") / "store"
    sweep = make_sweep(root)
    df = sweep.run()
    return lds_by_label(df), counts(sweep.store)


@pytest.fixture(scope="session")
def gcs_address(ray_session) -> str:
    """Address of the session's Ray runtime, for CLI subprocesses to join."""
    return ray_session.get_runtime_context().gcs_address
