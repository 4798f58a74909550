"""`raytda serve` on a task with dict rows: a tiny GPT-2 (TinyTokenLM, tests/conftest.py)
served over HTTP on 127.0.0.1, taking token rows of ragged lengths, answering the
in-process Attributor's top-k for the same rows, and refusing bad rows with a 400 that
harms neither the replica nor the good requests batched with them.

Exactness: a request alone in its scoring call is padded exactly as ``Attributor.scores``
pads the same rows (the task's collate, to the request's longest row), so its scores are
the same numbers and its top-k the same indices. Requests sharing a call are padded to the
call's longest row, which changes scores only by float32 rounding (tests/test_dict_rows.py
measured at most 2.6e-7 of the largest score over 4 model seeds); those are compared with
REL_TOL = 1e-5 of the largest score, about 40x that.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from test_serve_app import free_port, post, rel_diff, scores_of, serve_cli

from raytda.attributor import Attributor
from raytda.serving import deploy

pytestmark = pytest.mark.ray

REL_TOL = 1e-5  # from the measured spread, see the module docstring
MAX_BATCH = 8


@pytest.fixture(scope="module")
def ensemble(token_sweep):
    return token_sweep.spec.evaluations()[0].ensemble


@pytest.fixture(scope="module")
def served(ray_session, token_sweep, ensemble, one_torch_thread):
    """The token configuration served by one replica on a free port; a long batch wait so
    that concurrent requests share scoring calls."""
    s = deploy(token_sweep, ensemble, port=free_port(), cpus_per_replica=0.5,
               max_batch_size=MAX_BATCH, batch_wait_ms=50, name="tokens",
               route_prefix="/tokens")
    yield s
    s.shutdown()


@pytest.fixture(scope="module")
def attributor(token_sweep, ensemble):
    return Attributor.from_sweep(token_sweep, ensemble)


def test_get_describes_token_rows_with_a_request_that_works(served):
    info = served.info()
    assert info["inputs"] == "token rows"
    keys = info["row_keys"]
    assert keys["input_ids"]["required"] and keys["input_ids"]["values"] == "0..15"
    assert not keys["attention_mask"]["required"] and not keys["labels"]["required"]
    assert (info["max_tokens"], info["vocab_size"], info["classes"]) == (24, 16, 16)
    status, answer = post(served.url, info["example"])
    assert status == 200 and len(answer["results"][0]["proponents"]) == 10


def test_token_rows_in_the_attributors_top_k_out(served, attributor, make_token_rows):
    rows = make_token_rows(5, seed=7)
    rows[1] = {"input_ids": rows[1]["input_ids"]}  # no mask: all ones
    ref = attributor.top_k(rows, k=4)
    status, got = post(served.url, {"rows": rows, "k": 4, "scores": True})
    assert status == 200 and len(got["results"]) == 5
    res = got["results"]
    assert [r["proponents"] for r in res] == ref.proponents.tolist()
    assert [r["opponents"] for r in res] == ref.opponents.tolist()
    # alone in its scoring call: the same padding, so the same numbers
    assert torch.equal(scores_of(got), attributor.scores(rows))
    assert torch.equal(torch.tensor([r["proponent_scores"] for r in res]),
                       ref.proponent_scores)
    # the same rows as columns, as a tokenizer gives a list of texts
    columns = {"input_ids": [r["input_ids"] for r in rows]}
    assert post(served.url, {"rows": columns, "k": 4})[1]["results"][0]["proponents"] == \
        ref.proponents[0].tolist()


def test_the_stored_test_rows_get_their_stored_scores(served, token_sweep, ensemble,
                                                      make_token_rows):
    status, got = post(served.url, {"rows": make_token_rows(4, seed=1), "scores": True})
    assert status == 200
    assert torch.equal(scores_of(got), token_sweep.scores(ensemble))


BAD_ROWS = [
    ([{"input_ids": [1, 2, 16]}], "token id 16 is outside the vocabulary 0..15"),
    ([{"input_ids": [1, 2, 3], "attention_mask": [1, 1]}],
     "'attention_mask' has 2 values but 'input_ids' has 3"),
    ([{"input_ids": []}], "'input_ids' is empty"),
    ([{"input_ids": ["a", "b"]}], "holds values that are not numbers"),
    ([{"input_ids": [1.5, 2.0]}], "must hold integers"),
    ([{"input_ids": [1, 2], "labels": [1, 99]}], "target 99 is outside 0..15 or -100"),
    ([{"input_ids": [5]}], "nothing to attribute"),
    ([{"input_ids": [1, 2], "attention_mask": [1, 2]}], "values other than 0 and 1"),
    ([{"ids": [1, 2]}], "unknown key(s) 'ids'"),
    ([[1, 2, 3]], "is a list, not a dict"),
    ([{"input_ids": list(range(1, 16)) * 2}], "has 30 tokens; the model takes at most 24"),
]


def test_bad_token_rows_get_a_400_with_a_reason(served, make_token_rows):
    good = make_token_rows(1, seed=3)
    for rows, needle in BAD_ROWS:
        # the bad row second, so the reason names row 1
        code, answer = post(served.url, {"rows": good + rows})
        assert code == 400, (needle, answer)
        assert answer["error"].startswith("request row 1: ") and needle in answer["error"]
        assert "\n" not in answer["error"]
    for body, needle in [({"inputs": [[1, 2]], "targets": [[1, 2]]}, "send 'rows'"),
                         ({"k": 3}, "missing 'rows'"),
                         ({"rows": "1 2 3"}, "must be a list of rows"),
                         ({"rows": []}, "holds no rows")]:
        code, answer = post(served.url, body)
        assert code == 400 and needle in answer["error"], answer
    code, answer = post(served.url, {"rows": make_token_rows(MAX_BATCH + 1, seed=3)})
    assert code == 413 and f"at most {MAX_BATCH}" in answer["error"]


def test_bad_rows_fail_neither_their_batch_mates_nor_the_replica(served, attributor,
                                                                make_token_rows):
    goods = [{"rows": [row], "k": 3, "scores": True} for row in make_token_rows(6, seed=11)]
    alone = [attributor.scores(g["rows"]) for g in goods]
    mixed = [b for pair in zip(goods, [{"rows": rows} for rows, _ in BAD_ROWS]) for b in pair]
    with ThreadPoolExecutor(len(mixed)) as pool:
        answers = list(pool.map(lambda b: post(served.url, b), mixed))
    assert all(code == 400 for code, _ in answers[1::2])
    assert all(code == 200 for code, _ in answers[0::2])
    scale = float(torch.cat(alone).abs().max())
    for (_, got), want in zip(answers[0::2], alone):
        # batched with rows of other lengths: padding differs, float rounding only
        assert rel_diff(scores_of(got), want, scale) < REL_TOL
    assert post(served.url, goods[0])[0] == 200


def test_cli_serves_a_task_with_dict_rows(served, token_sweep, ensemble, attributor,
                                          make_token_rows, ray_session):
    """`raytda serve --task tests/conftest.py:TinyTokenLM` comes up (it used to crash in
    every replica) and answers token rows as the Attributor does; SIGTERM stops it."""
    assert ensemble.label == "dropout I=1 D=2"  # what the --ensemble flag below names
    task_file = Path(__file__).resolve().parents[1] / "conftest.py"
    args = ["--task", f"{task_file}:TinyTokenLM", "--method", "trak", "--proj-dim", "8",
            "--no-lds", "--ensemble", "dropout:I=1,D=2", "--store", str(token_sweep.store.uri),
            "--port", str(urlparse(served.url).port),
            "--address", ray_session.get_runtime_context().gcs_address,
            "--cpus-per-replica", "0.5", "--device", "cpu"]
    with serve_cli(args, "trak dropout I=1 D=2 on tiny-token-lm") as (url, stopped):
        rows = make_token_rows(3, seed=5)
        status, got = post(url, {"rows": rows, "k": 2})
        assert status == 200
        assert [r["proponents"] for r in got["results"]] == \
            attributor.top_k(rows, k=2).proponents.tolist()
    assert stopped["returncode"] == 0, stopped["err"]
    assert "raytda: serve stopped" in stopped["out"]

