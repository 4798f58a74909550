"""The replica's batch logic without Ray: how a batch of checked requests is scored, split
back into answers, and kept apart when one of them fails or when rows have masks of their
own. The Attributor is replaced by a recorder of its calls."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ray.serve")

from raytda.serving.protocol import AttributionRequest, InputSchema  # noqa: E402
from raytda.serving.replica import AttributorDeployment, ScoringFailed  # noqa: E402

N_TRAIN = 5


class Recorder:
    """Scores row r of x as x[r, 0] * (train index + 1); fails on an input whose first
    feature is negative (a stand-in for a failure inside scoring)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []  # (rows, start) per call

    def scores(self, x: torch.Tensor, y: torch.Tensor, start: int = 0) -> torch.Tensor:
        self.calls.append((int(x.shape[0]), start))
        if (x[:, 0] < 0).any():
            raise RuntimeError("boom\nsecond line")
        return x[:, :1] * torch.arange(1, N_TRAIN + 1, dtype=torch.float32)


def replica(rows_matter: bool) -> AttributorDeployment:
    cls = AttributorDeployment.func_or_class
    r = cls.__new__(cls)
    r.attributor, r.rows_matter = Recorder(), rows_matter
    r.schema = InputSchema((2,), torch.float32, (), torch.int64)
    return r


def request(first: float, n: int = 1, start: int = 0) -> AttributionRequest:
    x = torch.full((n, 2), first)
    return AttributionRequest(x, torch.zeros(n, dtype=torch.long), k=2, start=start)


def test_a_batch_is_one_call_split_back_in_order():
    r = replica(rows_matter=False)
    out = r._score_all([request(1.0), request(2.0, n=2), request(3.0)])
    assert r.attributor.calls == [(4, 0)]
    assert [len(a) for a in out] == [1, 2, 1]
    assert [a[0]["proponent_scores"][0] for a in out] == [5.0, 10.0, 15.0]
    assert out[1][1]["proponents"] == [4, 3] and out[1][1]["opponents"] == [0, 1]


def test_a_failing_request_fails_alone_and_its_batch_mates_are_answered():
    r = replica(rows_matter=False)
    out = r._score_all([request(1.0), request(-1.0), request(2.0)])
    assert isinstance(out[1], ScoringFailed)
    assert str(out[1]) == "scoring failed: RuntimeError: boom second line"
    assert out[0][0]["proponent_scores"][0] == 5.0 and out[2][0]["proponent_scores"][0] == 10.0
    assert r.attributor.calls == [(3, 0), (1, 0), (1, 0), (1, 0)]  # the batch, then each


def test_per_sample_masks_score_each_request_from_its_own_start():
    r = replica(rows_matter=True)
    out = r._score_all([request(1.0, start=7), request(2.0, n=2, start=3)])
    assert r.attributor.calls == [(1, 7), (2, 3)]
    assert [len(a) for a in out] == [1, 2]
