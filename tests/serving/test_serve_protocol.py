"""The request rules of `raytda serve`, without Ray: what is accepted, what is refused and
with which status and reason."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from raytda.data.check import TargetRule
from raytda.serving.protocol import (
    BadRequest,
    InputSchema,
    answer,
    encode_tensors,
    parse_request,
)
from raytda.tasks import get_task

# The toy task's rows: 8 float32 features, one int64 label out of 3 classes.
SCHEMA = InputSchema((8,), torch.float32, (), torch.int64, TargetRule(3, ()))
N_TRAIN, MAX_ROWS = 60, 4


def parse(obj) -> object:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_request(body, SCHEMA, N_TRAIN, MAX_ROWS)


def refused(obj, needle: str, status: int = 400) -> None:
    with pytest.raises(BadRequest) as info:
        parse(obj)
    assert info.value.status == status
    assert needle in info.value.reason
    assert "\n" not in info.value.reason


X = torch.linspace(-1, 1, 16).reshape(2, 8)
Y = torch.tensor([0, 2])


def test_schema_of_the_toy_task_comes_from_its_data_and_logits():
    schema = InputSchema.of_task(get_task("toy-mlp"))
    assert schema == SCHEMA


def test_json_rows_become_the_tasks_dtypes_exactly():
    req = parse({"inputs": X.tolist(), "targets": Y.tolist(), "k": 3, "scores": True,
                 "start": 5})
    assert req.x.dtype == torch.float32 and req.y.dtype == torch.int64
    assert torch.equal(req.x, X) and torch.equal(req.y, Y)  # float32 survives JSON exactly
    assert (req.k, req.scores, req.start, req.n) == (3, True, 5, 2)
    default = parse({"inputs": X.tolist(), "targets": Y.tolist()})
    assert (default.k, default.scores, default.start) == (10, False, 0)


def test_integer_json_inputs_are_read_as_floats():
    req = parse({"inputs": [[1] * 8], "targets": [1]})
    assert req.x.dtype == torch.float32 and req.x.sum() == 8


def test_tensor_payloads_round_trip():
    req = parse({"tensors": encode_tensors(X, Y), "k": 2})
    assert torch.equal(req.x, X) and torch.equal(req.y, Y) and req.k == 2


@pytest.mark.parametrize("body, needle", [
    (b"{not json", "body is not JSON"),
    (b"{\"k\": \"\x80\"}", "not UTF-8 JSON"),
    ([1, 2], "must be a JSON object"),
    ({"inputs": [[0.0] * 8], "targets": [0], "topk": 3}, "unknown field(s) 'topk'"),
    ({"inputs": [[0.0] * 8]}, "missing 'targets'"),
    ({"inputs": [[0.0] * 7], "targets": [0]}, "shape [1, 7]; expected [n, 8]"),
    ({"inputs": [0.0] * 8, "targets": [0]}, "shape [8]; expected [n, 8]"),
    ({"inputs": [], "targets": []}, "expected [n, 8]"),
    ({"inputs": [[0.0] * 8, [0.0] * 7], "targets": [0, 1]}, "ragged"),
    ({"inputs": [["a"] * 8], "targets": [0]}, "not numbers"),
    ({"inputs": [[True] * 8], "targets": [0]}, "booleans"),
    ({"inputs": [[None] * 8], "targets": [0]}, "not numbers"),
    ({"inputs": "0,0", "targets": [0]}, "must be a list of rows"),
    ({"inputs": [[float("nan")] * 8], "targets": [0]}, "NaN or infinity"),
    ({"inputs": [[0.0] * 8], "targets": [0.5]}, "must hold integers"),
    ({"inputs": [[0.0] * 8], "targets": [3]}, "label 3 is outside 0..2"),
    ({"inputs": [[0.0] * 8], "targets": [-1]}, "label -1 is outside 0..2"),
    ({"inputs": [[0.0] * 8] * 2, "targets": [0]}, "2 inputs but 1 targets"),
    ({"inputs": [[0.0] * 8], "targets": [[0]]}, "targets have shape [1, 1]; expected [n]"),
    ({"inputs": [[0.0] * 8], "targets": [0], "k": 0}, "'k' must be in [1, 60], got 0"),
    ({"inputs": [[0.0] * 8], "targets": [0], "k": 61}, "'k' must be in [1, 60], got 61"),
    ({"inputs": [[0.0] * 8], "targets": [0], "k": 2.5}, "'k' must be an integer"),
    ({"inputs": [[0.0] * 8], "targets": [0], "k": True}, "'k' must be an integer"),
    ({"inputs": [[0.0] * 8], "targets": [0], "scores": "yes"}, "'scores' must be true"),
    ({"inputs": [[0.0] * 8], "targets": [0], "start": -1}, "'start' must be in >= 0"),
    ({"tensors": "@@@", "k": 1}, "not valid base64"),
    ({"tensors": base64.b64encode(b"garbage").decode(), "k": 1}, "not a safetensors"),
    ({"tensors": 3}, "base64 text of a safetensors"),
    ({"tensors": encode_tensors(X, Y), "inputs": X.tolist()}, "not both"),
    ({"tensors": encode_tensors(X.double(), Y)}, "inputs are float64; the task's inputs "
                                                 "are float32"),
    ({"tensors": encode_tensors(X, Y.int())}, "targets are int32"),
    ({"tensors": encode_tensors(X[:, :4], Y)}, "shape [2, 4]; expected [n, 8]"),
    ({"tensors": encode_tensors(X * float("inf"), Y)}, "NaN or infinity"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_requests_are_refused_with_a_reason(body, needle):
    refused(body, needle)


def test_too_many_inputs_is_413():
    refused({"inputs": [[0.0] * 8] * (MAX_ROWS + 1), "targets": [0] * (MAX_ROWS + 1)},
            f"at most {MAX_ROWS}", status=413)
    assert parse({"inputs": [[0.0] * 8] * MAX_ROWS, "targets": [0] * MAX_ROWS}).n == MAX_ROWS


def test_a_safetensors_payload_with_other_names_is_refused():
    from safetensors.torch import save

    blob = base64.b64encode(save({"x": X, "y": Y})).decode()
    refused({"tensors": blob}, "exactly the tensors 'inputs' and 'targets'")


def test_answers_are_topk_both_ways_best_first():
    scores = torch.tensor([[0.5, -2.0, 3.0, 0.0, -1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    rows = answer(scores, 2, with_scores=False)
    assert rows[0] == {"proponents": [2, 0], "proponent_scores": [3.0, 0.5],
                       "opponents": [1, 4], "opponent_scores": [-2.0, -1.0]}
    assert rows[1]["proponents"] == [4, 3] and rows[1]["opponents"] == [0, 1]
    full = answer(scores, 1, with_scores=True)
    assert full[1]["scores"] == scores[1].tolist()


# ------------------------------------------------------------------ token rows


@pytest.fixture(scope="module")
def token_schema(token_task):
    from raytda.serving.protocol import schema_of

    return schema_of(token_task)


def parse_tokens(obj, schema) -> object:
    return parse_request(json.dumps(obj).encode(), schema, N_TRAIN, MAX_ROWS)


def test_a_task_with_dict_rows_takes_token_rows(token_schema, token_task):
    from raytda.data.token_rows import RowSchema
    from raytda.serving.protocol import join

    assert isinstance(token_schema, RowSchema)
    a = parse_tokens({"rows": [{"input_ids": [1, 2, 3]}], "k": 3, "start": 2}, token_schema)
    b = parse_tokens({"rows": [{"input_ids": [4, 5], "attention_mask": [1, 1]},
                               {"input_ids": [6, 7, 8, 9]}]}, token_schema)
    assert (a.n, a.k, a.start, a.y, b.n) == (1, 3, 2, None, 2)
    # a batch of requests is their rows padded together by the task's collate
    x, y = join(token_schema, [a, b])
    want_x, want_y = token_task.data().test.collate_xy(a.x + b.x)
    assert x["input_ids"].shape == (3, 4) and torch.equal(y, want_y)
    assert all(torch.equal(x[k], want_x[k]) for k in want_x.keys())


@pytest.mark.parametrize("body, needle, status", [
    ({"inputs": [[1, 2]], "targets": [[1, 2]]}, "this task takes token rows: send 'rows'", 400),
    ({"tensors": "AAAA"}, "send 'rows'", 400),
    ({"k": 2}, "missing 'rows'", 400),
    ({"rows": [{"input_ids": [1, 2, 16]}]}, "request row 0: token id 16 is outside", 400),
    ({"rows": [{"input_ids": [1, 2]}], "k": 61}, "'k' must be in [1, 60]", 400),
    ({"rows": [{"input_ids": [1, 2]}] * (MAX_ROWS + 1)}, f"at most {MAX_ROWS}", 413),
    ({"rows": {"input_ids": [[1, 2]] * (MAX_ROWS + 1)}}, f"at most {MAX_ROWS}", 413),
])
def test_bad_token_requests_are_refused_with_a_reason(token_schema, body, needle, status):
    with pytest.raises(BadRequest) as info:
        parse_tokens(body, token_schema)
    assert info.value.status == status and needle in info.value.reason
    assert "\n" not in info.value.reason


def test_rows_are_refused_for_a_tensor_task():
    refused({"rows": [{"input_ids": [1, 2]}]}, "'rows' is for tasks with token rows")


def test_the_tensor_schema_of_a_task_with_dict_rows_is_refused_in_one_line(token_task):
    from raytda.specs import SpecError

    with pytest.raises(SpecError, match="has dict rows: its requests hold token rows"):
        InputSchema.of_task(token_task)
