"""The Ray Serve deployment: one :class:`~raytda.attributor.Attributor` per replica,
answering the HTTP protocol of :mod:`raytda.serving.protocol` in batches.

Each replica loads the configuration's train side from the store itself when it starts
(member networks, solved train sides, mean Q; projections regenerated from their seeds):
replicas read the same stored artifacts, nothing of the train side is recomputed, and
nothing is shipped from the driver but the configuration's description. So the store
must be readable from every node a replica may run on (a shared path or a store URI).

A request is checked completely in ``__call__``, before it joins a batch, so a bad
request is answered 4xx on its own and never fails the batch of good ones it would have
joined. Token rows of a batch's requests are padded together by the task's collate (to
the batch's longest row: padding changes no score beyond float rounding, see
tests/test_dict_rows.py). Batches are counted in inputs, not requests
(``batch_size_fn``): the max batch size bounds the rows of one scoring call, whatever the
mix of request sizes. The scoring runs in a worker thread so the replica keeps accepting
and checking requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from raytda.attributor import Attributor
from raytda.core.args import ComputeArgs
from raytda.plan.evaluate import Evaluate
from raytda.serving.protocol import (
    AttributionRequest,
    BadRequest,
    answer,
    join,
    json_bytes,
    parse_request,
    schema_of,
)

log = logging.getLogger(__name__)


def _rows_in(requests: list[AttributionRequest]) -> int:
    """A batch's size for ``serve.batch``: the inputs it holds."""
    return sum(r.n for r in requests)


def _reply(obj: Any, status: int = 200) -> Response:
    return Response(json_bytes(obj), status_code=status, media_type="application/json")


class ScoringFailed(Exception):
    """A checked request whose scoring raised anyway (a bug, or the device ran out of
    memory): answered 500 with this one line, alone, its batch-mates unharmed."""


def _failure(r: AttributionRequest, e: Exception) -> ScoringFailed:
    log.error("scoring a request of %d inputs failed", r.n, exc_info=e)
    line = " ".join(str(e).split()) or type(e).__name__
    return ScoringFailed(f"scoring failed: {type(e).__name__}: {line}")


@serve.deployment(name="attributor")
class AttributorDeployment:
    """A Serve replica scoring requests against one finished configuration.

    Args:
        store: the configuration's store path or URI, as its sweep wrote it.
        evaluate: the configuration (``Sweep.evaluation(...)``).
        device, memory_bytes, compute: as for :class:`~raytda.attributor.Attributor`.
        max_batch_size: most inputs per scoring call, and so per request.
        batch_wait_s: how long a batch waits to fill once its first request arrived.
        max_body_bytes: bodies beyond it are refused (413) unread.
        threads: torch intra-op threads of the replica (its CPU reservation).
    """

    def __init__(self, store: str, evaluate: Evaluate, device: str, memory_bytes: int,
                 compute: ComputeArgs, max_batch_size: int, batch_wait_s: float,
                 max_body_bytes: int, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.attributor = Attributor(store, evaluate, device, memory_bytes, compute)
        self.schema = schema_of(evaluate.task)
        self.n_train = self.attributor.n_train
        # Per-sample masks follow a row's number (``start`` + i), so such requests are
        # scored one call each; fixed masks (and none) are the same for every row.
        self.rows_matter = evaluate.ensemble.mask_mode == "per-sample"
        self.max_rows = max_batch_size
        self.max_body_bytes = max_body_bytes
        self.score_batch.set_max_batch_size(max_batch_size)
        self.score_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.info = {
            "configuration": evaluate.describe().removeprefix("evaluate "),
            "task": evaluate.task.name, "method": evaluate.method.name,
            "ensemble": evaluate.ensemble.label, "members": self.attributor.n_members,
            "n_train": self.n_train, "max_inputs_per_request": max_batch_size,
            "device": device, **self.schema.describe()}

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET":
            return _reply(self.info)
        if request.method != "POST":
            return _reply({"error": f"method {request.method} not allowed; POST a request "
                                    f"or GET the deployment's description"}, 405)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return self._too_large(int(declared))
        body = await request.body()
        if len(body) > self.max_body_bytes:
            return self._too_large(len(body))
        try:
            req = parse_request(body, self.schema, self.n_train, self.max_rows)
        except BadRequest as e:
            return _reply({"error": e.reason}, e.status)
        result = await self.score_batch(req)
        if isinstance(result, ScoringFailed):
            return _reply({"error": str(result)}, 500)
        return _reply({"results": result})

    def _too_large(self, n: int) -> Response:
        return _reply({"error": f"body of {n} bytes; at most {self.max_body_bytes}: send "
                                f"fewer inputs per request"}, 413)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, batch_size_fn=_rows_in)
    async def score_batch(self, requests: list[AttributionRequest]
                          ) -> list[list[dict[str, Any]] | ScoringFailed]:
        """Answers of a batch of checked requests, in order (set sizes in ``__init__``)."""
        return await asyncio.to_thread(self._score_all, requests)

    def _score_all(self, requests: list[AttributionRequest]
                   ) -> list[list[dict[str, Any]] | ScoringFailed]:
        groups = [[r] for r in requests] if self.rows_matter else [requests]
        out: list[list[dict[str, Any]] | ScoringFailed] = []
        for group in groups:
            try:
                out.extend(self._score(group))
            except Exception as e:
                if len(group) == 1:
                    out.append(_failure(group[0], e))
                    continue
                # Find the culprit: every request alone, so only it fails.
                for r in group:
                    try:
                        out.extend(self._score([r]))
                    except Exception as e_alone:
                        out.append(_failure(r, e_alone))
        return out

    def _score(self, group: list[AttributionRequest]) -> list[list[dict[str, Any]]]:
        x, y = join(self.schema, group)
        scores = self.attributor.scores(x, y, start=group[0].start)
        out, row = [], 0
        for r in group:
            out.append(answer(scores[row:row + r.n], r.k, r.scores))
            row += r.n
        return out
