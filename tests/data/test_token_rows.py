"""New token rows for a task with dict rows (raytda.data.token_rows): what a row must be,
what is filled in, how rows are padded, and each fault as one line naming the row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytda.core.outputs import CAUSAL_LM
from raytda.data.collate import PadCollate
from raytda.data.samples import DictSamples
from raytda.data.token_rows import RowSchema
from raytda.specs import SpecError
from raytda.tasks import get_task

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def schema(token_task) -> RowSchema:
    return RowSchema.of_task(token_task)


def test_the_schema_comes_from_the_tasks_rows_and_model(schema):
    rules = {r.name: r for r in schema.keys}
    assert list(rules) == ["input_ids", "attention_mask", "labels"]
    assert (rules["input_ids"].dtype, rules["input_ids"].dims, rules["input_ids"].default) == (
        torch.int64, 1, None)
    assert rules["attention_mask"].default == "ones" and rules["attention_mask"].per_token
    assert rules["labels"].default == "collate"  # PadCollate(labels_from="input_ids")
    assert (schema.vocab, schema.max_tokens) == (16, 24)  # GPT2Config's vocab, n_positions
    assert (schema.target_rule.classes, schema.target_rule.ignore) == (16, -100)
    assert RowSchema.of_task(get_task("toy-mlp")) is None  # tensor rows: no row schema


def test_rows_are_padded_as_the_task_pads_its_test_rows(schema, token_task, make_token_rows):
    rows = make_token_rows(4, seed=1)  # the task's own test rows
    x, y = schema.collate(schema.check(rows))
    tx, ty = token_task.data().test.take(torch.arange(4))
    assert set(x.keys()) == set(tx.keys())
    for k in tx.keys():
        assert torch.equal(x[k], tx[k])
    assert torch.equal(y, ty)


def test_a_left_out_mask_is_all_ones_and_labels_are_made_or_kept(schema):
    made, own = schema.check([{"input_ids": [3, 4, 5]},
                              {"input_ids": [3, 4, 5], "labels": [-100, -100, 5]}])
    assert torch.equal(made["attention_mask"], torch.ones(3, dtype=torch.long))
    assert torch.equal(made["labels"], made["input_ids"])
    assert own["labels"].tolist() == [-100, -100, 5]  # only the last token attributed
    # numpy arrays, int32 tensors and columns read as the same rows
    again = schema.check({"input_ids": [np.array([3, 4, 5]), torch.tensor([3, 4, 5],
                                                                          dtype=torch.int32)]})
    assert all(torch.equal(r["input_ids"], made["input_ids"]) for r in again)
    assert again[0]["input_ids"].dtype == torch.int64


@pytest.mark.parametrize("row, message", [
    ({"input_ids": [1, 16]}, "token id 16 is outside the vocabulary 0..15"),
    ({"input_ids": [-1, 2]}, "token id -1 is outside the vocabulary 0..15"),
    ({"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1, 1]},
     "'attention_mask' has 4 values but 'input_ids' has 3; give one per token"),
    ({"input_ids": [1, 2, 3], "labels": [1, 2]}, "'labels' has 2 values but 'input_ids' has 3"),
    ({"input_ids": []}, "'input_ids' is empty"),
    ({"input_ids": [1, "2"]}, "'input_ids' holds values that are not numbers"),
    ({"input_ids": [True, False]}, "'input_ids' holds booleans"),
    ({"input_ids": [1.0, 2.0]}, "'input_ids' must hold integers (int64), got floats"),
    ({"input_ids": [[1, 2], [3]]}, "'input_ids' is ragged"),
    ({"input_ids": [[1, 2]]}, "'input_ids' has shape [1, 2]"),
    ({"input_ids": 7}, "'input_ids' has shape []"),
    ({"input_ids": [1, 2 ** 70]}, "'input_ids' holds integers out of the range of int64"),
    ({"attention_mask": [1, 1]}, "lacks 'input_ids'"),
    ({"input_ids": [1, 2], "position": [0, 1]}, "unknown key(s) 'position'"),
    ({"input_ids": [1, 2], "attention_mask": [1, 3]}, "values other than 0 and 1"),
    ({"input_ids": [1, 2], "attention_mask": [0, 0]}, "'attention_mask' is all 0"),
    ({"input_ids": [1, 2], "labels": [1, 40]}, "target 40 is outside 0..15 or -100"),
    ({"input_ids": [1, 2, 3], "labels": [1, -100, -100]}, "nothing to attribute"),
    ({"input_ids": [4]}, "nothing to attribute"),  # one token: no next token
    ({"input_ids": list(range(1, 16)) * 2}, "has 30 tokens; the model takes at most 24"),
    ([1, 2, 3], "is a list, not a dict"),
])
def test_each_bad_row_is_one_line_naming_it(schema, row, message):
    good = {"input_ids": [1, 2, 3]}
    with pytest.raises(SpecError) as err:
        schema.check([good, row], "request")
    text = str(err.value)
    assert text.startswith("request row 1: ") and message in text, text
    assert "\n" not in text


@pytest.mark.parametrize("rows, message", [
    ([], "holds no rows"),
    ("1 2 3", "must be a list of rows"),
    ({"input_ids": [[1, 2]], "attention_mask": [[1, 1], [1]]}, "lists of one length"),
])
def test_what_is_not_rows_is_refused(schema, rows, message):
    with pytest.raises(SpecError, match="^input .*" + message.replace("(", r"\(")):
        schema.check(rows)


def test_targets_the_collate_does_not_make_are_required(token_task):
    rows = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}]
    samples = DictSamples(rows, collate=PadCollate())  # no labels_from: labels are data
    schema = RowSchema.of(samples, token_task.build_model(), output=CAUSAL_LM)
    assert next(r for r in schema.keys if r.name == "labels").default is None
    assert "attention_mask" not in [r.name for r in schema.keys]
    with pytest.raises(SpecError, match="^input row 0: lacks 'labels'$"):
        schema.check([{"input_ids": [1, 2]}])
    assert schema.check(rows)[0]["labels"].tolist() == [1, 2, 3]


def test_the_description_holds_a_request_that_passes_the_check(schema):
    d = schema.describe()
    assert d["inputs"] == "token rows" and d["vocab_size"] == 16
    assert d["row_keys"]["labels"]["default"] == "made by the task's collate"
    assert len(schema.check(d["example"]["rows"])) == 1
