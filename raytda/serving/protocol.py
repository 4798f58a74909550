"""The HTTP protocol of ``raytda serve``: requests checked and turned into tensors, scores
turned into answers. Pure Python and torch, no Ray, so every rule is testable on its own.

A request is a JSON object (``POST`` to the deployment's route)::

    {"inputs": [[...], ...], "targets": [...], "k": 10, "scores": false, "start": 0}

or, for exact tensors and less parsing, the same with ``"tensors"`` in place of
``"inputs"`` and ``"targets"``: the base64 text of a safetensors payload holding the
tensors ``inputs`` and ``targets`` (:func:`encode_tensors` writes one). Inputs have the
task's input shape per row and targets its target shape (class labels for classifiers).
JSON numbers become the task's input dtype; tensors must have it already.

A task whose rows are dicts of token sequences (:class:`~raytda.data.samples.DictSamples`,
e.g. a causal LM) takes token rows instead, as a tokenizer gives them, of any length::

    {"rows": [{"input_ids": [...], "attention_mask": [...]}, ...], "k": 10}

(or ``"rows"`` as columns, ``{"input_ids": [[...], ...], ...}``). The mask may be left
out (all ones), and so may the targets when the task's collate makes them (a causal LM's
``labels`` from ``input_ids``); a row may give its own ``labels``, -100 where a token is not
attributed. Each row is checked (:mod:`raytda.data.token_rows`), then the rows of a batch
are padded together by the task's own collate. GET on the route describes the row keys
and gives an example request.

- ``k`` (default 10, at most the train size): proponents and opponents per input;
- ``scores`` (default false): also return each input's full score row (n_train floats);
- ``start`` (default 0): input i gets the dropout masks of test row ``start + i``. Only
  per-sample dropout masks depend on it; with it a stored test row is answered with
  exactly the scores its sweep stored.

The answer is ``{"results": [...]}``, one object per input, in order::

    {"proponents": [train indices], "proponent_scores": [...],
     "opponents": [...], "opponent_scores": [...], "scores": [...]}   # scores if asked

best first: proponents by decreasing score, opponents by increasing score, as
:meth:`raytda.attributor.Attributor.top_k`. A request that breaks a rule is answered
with a 4xx status and ``{"error": "<one line>"}`` before it reaches a batch.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raytda.data.check import TargetRule, check_targets
from raytda.data.token_rows import RowSchema, count_rows
from raytda.specs import SpecError

if TYPE_CHECKING:
    from raytda.task import Task

FIELDS = ("inputs", "targets", "tensors", "rows", "k", "scores", "start")
DEFAULT_K = 10


class BadRequest(Exception):
    """A request the protocol refuses: HTTP ``status`` and a one-line ``reason``."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = " ".join(reason.split())
        self.status = status


@dataclass(frozen=True)
class InputSchema:
    """What one row of a request must be: the task's test rows' shapes and dtypes, and the
    rule its model output sets for targets (None: targets not read as class indices)."""

    x_shape: tuple[int, ...]
    x_dtype: torch.dtype
    y_shape: tuple[int, ...]
    y_dtype: torch.dtype
    target_rule: TargetRule | None = None

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, target_rule: TargetRule | None = None
           ) -> InputSchema:
        """The schema of rows like ``x[0]``, ``y[0]`` (a batch of at least one row)."""
        return cls(tuple(x.shape[1:]), x.dtype, tuple(y.shape[1:]), y.dtype, target_rule)

    @classmethod
    def of_task(cls, task: Task) -> InputSchema:
        """The schema of ``task``'s test rows, with the target rule its model output sets
        (found as a sweep's checks find it: from the logits of a freshly built model)."""
        from raytda.data.samples import DictSamples
        from raytda.validate import check_output

        data = task.data()
        if isinstance(data.test, DictSamples):
            raise SpecError(f"task {task.name!r} has dict rows: its requests hold token rows "
                            f"(RowSchema; schema_of(task) picks the schema of any task)")
        x, y = data.test.take(torch.arange(1))
        rules = check_output(task, task.network(task.build_model()), data)
        return cls.of(x, y, rules["test"])

    def describe(self) -> dict[str, Any]:
        """JSON description (what ``GET`` on the deployment's route answers)."""
        rule = self.target_rule
        return {"input_shape": list(self.x_shape), "input_dtype": _name(self.x_dtype),
                "target_shape": list(self.y_shape), "target_dtype": _name(self.y_dtype),
                "classes": None if rule is None else rule.classes}


def schema_of(task: Task) -> InputSchema | RowSchema:
    """What ``task``'s requests hold: token rows (:class:`RowSchema`) for a task with dict
    rows, else tensors (:class:`InputSchema`); targets checked against the model output."""
    rows = RowSchema.of_task(task)
    return InputSchema.of_task(task) if rows is None else rows


@dataclass(frozen=True)
class AttributionRequest:
    """A checked request: inputs (n, *x_shape) and targets (n, *y_shape) of the schema's
    dtypes, or for token rows ``x`` the n checked rows and ``y`` None; k in [1, n_train],
    whether full score rows are wanted, the first mask row."""

    x: torch.Tensor | list[dict[str, torch.Tensor]]
    y: torch.Tensor | None
    k: int
    scores: bool = False
    start: int = 0

    @property
    def n(self) -> int:
        return len(self.x)


def join(schema: InputSchema | RowSchema, requests: list[AttributionRequest]
         ) -> tuple[Any, torch.Tensor]:
    """The inputs and targets of checked requests as one batch, in request order: token
    rows padded together by the task's collate, tensors concatenated."""
    if isinstance(schema, RowSchema):
        return schema.collate([row for r in requests for row in r.x])
    if len(requests) == 1:
        return requests[0].x, requests[0].y
    return torch.cat([r.x for r in requests]), torch.cat([r.y for r in requests])


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _int_field(body: dict[str, Any], key: str, default: int, low: int, high: int | None) -> int:
    v = body.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"{key!r} must be an integer, got {json.dumps(v)[:40]}")
    if v < low or (high is not None and v > high):
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise BadRequest(f"{key!r} must be in {allowed}, got {v}")
    return v


def _rows(what: str, t: torch.Tensor, row_shape: tuple[int, ...], max_rows: int) -> int:
    """The number of rows of ``t``, checked against the schema's row shape and the cap."""
    if t.ndim == 0 or tuple(t.shape[1:]) != row_shape:
        expected = ", ".join(["n", *(str(d) for d in row_shape)])
        raise BadRequest(f"{what} have shape {list(t.shape)}; expected [{expected}]")
    n = int(t.shape[0])
    if n < 1:
        raise BadRequest(f"{what} are empty; send at least one row")
    if n > max_rows:
        raise BadRequest(f"{n} {what} rows in one request; at most {max_rows} (the "
                         f"deployment's max batch size): split the request", status=413)
    return n


def _from_json(what: str, value: Any, dtype: torch.dtype) -> torch.Tensor:
    """Nested JSON lists of numbers as a tensor of ``dtype``; anything else is refused."""
    if not isinstance(value, list):
        raise BadRequest(f"{what!r} must be a list of rows (nested lists of numbers)")
    try:
        a = np.asarray(value)
    except (ValueError, OverflowError):
        raise BadRequest(f"{what!r} is ragged or holds numbers out of range: every row "
                         f"must have the same shape") from None
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        kind = "booleans" if a.dtype.kind == "b" else "values that are not numbers"
        raise BadRequest(f"{what!r} holds {kind}; send numbers")
    if a.dtype.kind == "f" and not dtype.is_floating_point:
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise BadRequest(f"{what!r} must hold integers (the task's {what} are "
                             f"{_name(dtype)})")
    if dtype.is_floating_point and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise BadRequest(f"{what!r} holds NaN or infinity; send finite numbers")
    try:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    except (TypeError, RuntimeError) as e:
        raise BadRequest(f"{what!r} cannot be read as {_name(dtype)} ({e})") from None


def encode_tensors(x: torch.Tensor, y: torch.Tensor) -> str:
    """The ``"tensors"`` field of a request for inputs ``x`` and targets ``y``."""
    from safetensors.torch import save

    blob = save({"inputs": x.detach().cpu().contiguous(), "targets": y.detach().cpu().contiguous()})
    return base64.b64encode(blob).decode("ascii")


def _from_tensors(value: Any, schema: InputSchema) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load

    if not isinstance(value, str):
        raise BadRequest("'tensors' must be the base64 text of a safetensors payload")
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("'tensors' is not valid base64") from None
    try:
        tensors = load(blob)
    except Exception:  # safetensors raises its own error types for damaged headers
        raise BadRequest("'tensors' is not a safetensors payload (write it with "
                         "safetensors.torch.save or raytda.serving.encode_tensors)") from None
    if set(tensors) != {"inputs", "targets"}:
        raise BadRequest(f"'tensors' must hold exactly the tensors 'inputs' and 'targets', "
                         f"got {sorted(tensors)}")
    x, y = tensors["inputs"], tensors["targets"]
    for what, t, want in (("inputs", x, schema.x_dtype), ("targets", y, schema.y_dtype)):
        if t.dtype != want:
            raise BadRequest(f"{what} are {_name(t.dtype)}; the task's {what} are "
                             f"{_name(want)}: convert them before encoding")
    if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
        raise BadRequest("inputs hold NaN or infinity; send finite numbers")
    return x, y


def _token_rows(req: dict[str, Any], schema: RowSchema, max_rows: int
                ) -> list[dict[str, torch.Tensor]]:
    """The checked rows of a token-row request."""
    given = [f for f in ("inputs", "targets", "tensors") if f in req]
    if given:
        raise BadRequest(f"this task takes token rows: send 'rows' (a list of objects such "
                         f"as {json.dumps(schema.example()[0])}), not "
                         f"{' and '.join(repr(g) for g in given)}")
    if "rows" not in req:
        raise BadRequest(f"missing 'rows'; send a list of token rows such as "
                         f"{json.dumps(schema.example()[0])}")
    n = count_rows(req["rows"])
    if n > max_rows:
        raise BadRequest(f"{n} rows in one request; at most {max_rows} (the deployment's "
                         f"max batch size): split the request", status=413)
    try:
        return schema.check(req["rows"], "request")
    except SpecError as e:
        raise BadRequest(str(e)) from None


def parse_request(body: bytes, schema: InputSchema | RowSchema, n_train: int, max_rows: int
                  ) -> AttributionRequest:
    """A request body checked against the schema, or :class:`BadRequest` with the reason.

    ``max_rows`` caps the inputs of one request (413 beyond it)."""
    try:
        req = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"body is not JSON ({e.msg} at line {e.lineno} column {e.colno})"
                         ) from None
    tokens = isinstance(schema, RowSchema)
    if not isinstance(req, dict):
        raise BadRequest("body must be a JSON object with 'rows'" if tokens else
                         "body must be a JSON object with 'inputs' and 'targets' (or "
                         "'tensors')")
    unknown = sorted(set(req) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(repr(u) for u in unknown)}; "
                         f"allowed: {', '.join(FIELDS)}")
    if tokens:
        rows = _token_rows(req, schema, max_rows)
        return AttributionRequest(rows, None, *_options(req, n_train))
    if "rows" in req:
        raise BadRequest("'rows' is for tasks with token rows; this task takes 'inputs' "
                         "and 'targets' (or 'tensors')")
    if "tensors" in req:
        if "inputs" in req or "targets" in req:
            raise BadRequest("give either 'tensors' or 'inputs' and 'targets', not both")
        x, y = _from_tensors(req["tensors"], schema)
    else:
        missing = [f for f in ("inputs", "targets") if f not in req]
        if missing:
            raise BadRequest(f"missing {' and '.join(repr(m) for m in missing)}; send "
                             f"'inputs' and 'targets' (or 'tensors')")
        x = _from_json("inputs", req["inputs"], schema.x_dtype)
        y = _from_json("targets", req["targets"], schema.y_dtype)
    n = _rows("inputs", x, schema.x_shape, max_rows)
    if y.ndim == 0 or int(y.shape[0]) != n:
        raise BadRequest(f"{n} inputs but {int(y.shape[0]) if y.ndim else 0} targets; give "
                         f"one target per input")
    _rows("targets", y, schema.y_shape, max_rows)
    if schema.target_rule is not None:
        try:
            check_targets(y, 0, schema.target_rule, "request", "targets")
        except SpecError as e:
            raise BadRequest(str(e)) from None
    return AttributionRequest(x, y, *_options(req, n_train))


def _options(req: dict[str, Any], n_train: int) -> tuple[int, bool, int]:
    """A request's k, whether it wants full score rows, and its start row."""
    k = _int_field(req, "k", min(DEFAULT_K, n_train), 1, n_train)
    want_scores = req.get("scores", False)
    if not isinstance(want_scores, bool):
        raise BadRequest(f"'scores' must be true or false, got {json.dumps(want_scores)[:40]}")
    start = _int_field(req, "start", 0, 0, None)
    return k, want_scores, start


def answer(scores: torch.Tensor, k: int, with_scores: bool) -> list[dict[str, Any]]:
    """One answer object per row of ``scores`` (n, n_train): top-k both ways, best first."""
    top = torch.topk(scores, k, dim=1, largest=True)
    low = torch.topk(scores, k, dim=1, largest=False)
    out = []
    for i in range(scores.shape[0]):
        row: dict[str, Any] = {
            "proponents": top.indices[i].tolist(), "proponent_scores": top.values[i].tolist(),
            "opponents": low.indices[i].tolist(), "opponent_scores": low.values[i].tolist()}
        if with_scores:
            row["scores"] = scores[i].tolist()
        out.append(row)
    return out


def json_bytes(obj: Any) -> bytes:
    """Compact JSON; float32 values pass through Python floats, which print them exactly."""
    return json.dumps(obj, separators=(",", ":")).encode()
