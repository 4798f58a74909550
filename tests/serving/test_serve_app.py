"""`raytda serve` end to end on 127.0.0.1: a finished toy configuration deployed on Ray
Serve (in the session's Ray runtime, which has no dashboard: Serve does not need one),
asked over HTTP, and compared with the in-process Attributor.

Score tolerance: HTTP answers and in-process scores of the same inputs differ only by
float32 rounding that depends on which rows share a scoring call. Measured on this toy
configuration (its 12 test inputs sent concurrently, one per request, 10 repeats, against
each row scored alone in-process): at most 1.4e-7 of the configuration's largest test
score, so up to 2.9e-7 between two batched answers. Tests allow 1e-6 of that scale.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import torch

from raytda import Sweep
from raytda.attributor import Attributor
from raytda.ensembles import Ensemble
from raytda.methods import Method
from raytda.serving import deploy, encode_tensors
from raytda.specs import SpecError
from raytda.tasks import get_task

pytestmark = pytest.mark.ray

REL_TOL = 1e-6  # from the measured spread, see the module docstring
# Inputs scored in one batch and one at a time get features that differ in float32
# rounding; rounded to the stored float16 (TRAK's query side), a feature near a rounding
# boundary moves by a float16 step, and the scores with it: 1.66e-5 measured (toy-mlp,
# 12 concurrent requests, the same in two runs), bounded here at 6x that.
REL_TOL_BATCHED = 1e-4
FIXED = Ensemble("dropout", 1, 3)
PER_SAMPLE = Ensemble("dropout", 1, 3, mask_mode="per-sample")
MAX_BATCH = 8
MAX_BODY = 64 << 10
# The configuration as `raytda sweep` flags name it (the CLI test serves it by them).
FLAGS = ["--setting", "toy-mlp", "--method", "trak", "--proj-dim", "16", "--no-lds"]


@contextmanager
def serve_cli(args: list[str], serving: str, cwd=None) -> Iterator[tuple[str, dict]]:
    """`raytda serve ARGS` started (in ``cwd``) until it prints its URL, which the body
    gets with a dict that holds its ``out``, ``err`` and ``returncode`` once the block
    ends and SIGTERM has stopped it; killed instead if the body fails. ``serving``: what
    its first line must say it serves (``trak dropout I=1 D=3 on toy-mlp``)."""
    proc = subprocess.Popen([sys.executable, "-m", "raytda.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=cwd)
    stopped: dict = {}
    try:
        line = ""
        end = time.monotonic() + 180
        while time.monotonic() < end and proc.poll() is None:
            line = proc.stdout.readline()
            if line.startswith("raytda: serving"):
                break
        assert line.startswith(f"raytda: serving {serving} at "), (
            line, proc.poll() is not None and proc.communicate())
        yield line.split(" at ", 1)[1].split(" ")[0], stopped
        os.kill(proc.pid, signal.SIGTERM)
        stopped["out"], stopped["err"] = proc.communicate(timeout=120)
        stopped["returncode"] = proc.returncode
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes | dict, method: str = "POST") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rel_diff(a: torch.Tensor, b: torch.Tensor, scale: float | None = None) -> float:
    """Largest difference relative to ``scale`` (default: b's largest magnitude)."""
    return float((a - b).abs().max() / (b.abs().max() if scale is None else scale))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_torch_thread):
    store = tmp_path_factory.mktemp("serve-store")
    sweep = Sweep(get_task("toy-mlp"), Method("trak", proj_dim=16), [FIXED, PER_SAMPLE],
                  lds=None, store=str(store), progress=False)
    sweep.run()
    return sweep


@pytest.fixture(scope="module")
def test_rows(finished):
    return finished.spec.tasks[0].data().test.tensors()


@pytest.fixture(scope="module")
def served(ray_session, finished):
    """Both configurations served, one replica each, on one free port; Serve is shut down
    at the end of the module (it was started here)."""
    port = free_port()
    # A long batch wait, so that concurrent requests do share scoring calls.
    kw = dict(port=port, cpus_per_replica=0.5, max_batch_size=MAX_BATCH, batch_wait_ms=50,
              max_body_bytes=MAX_BODY)
    fixed = deploy(finished, FIXED, name="fixed", route_prefix="/fixed", **kw)
    try:
        per_sample = deploy(finished, PER_SAMPLE, name="per-sample",
                            route_prefix="/per-sample", **kw)
    except BaseException:
        fixed.shutdown()
        raise
    assert fixed.started_serve and not per_sample.started_serve
    assert not fixed.started_ray  # the session's runtime stays up
    yield {"fixed": fixed, "per-sample": per_sample, "port": port}
    per_sample.shutdown()
    fixed.shutdown()
    from ray import serve

    assert serve.status().applications == {}


def scores_of(answer: dict) -> torch.Tensor:
    return torch.tensor([r["scores"] for r in answer["results"]])


def test_get_describes_the_configuration(served, finished):
    info = served["fixed"].info()
    assert info["configuration"] == "trak dropout I=1 D=3 on toy-mlp"
    assert info["n_train"] == finished.spec.tasks[0].data().n_train == 60
    assert (info["input_shape"], info["input_dtype"]) == ([8], "float32")
    assert (info["target_dtype"], info["classes"]) == ("int64", 3)
    assert info["max_inputs_per_request"] == MAX_BATCH


def test_top_k_over_http_is_the_attributors(served, finished, test_rows):
    x, y = test_rows[0][:5], test_rows[1][:5]
    attr = Attributor.from_sweep(finished, FIXED)
    ref = attr.top_k(x, y, k=4)
    status, got = post(served["fixed"].url, {"inputs": x.tolist(), "targets": y.tolist(),
                                             "k": 4, "scores": True})
    assert status == 200 and len(got["results"]) == 5
    rows = got["results"]
    assert [r["proponents"] for r in rows] == ref.proponents.tolist()
    assert [r["opponents"] for r in rows] == ref.opponents.tolist()
    full = attr.scores(x, y)
    scale = float(full.abs().max())
    assert rel_diff(torch.tensor([r["proponent_scores"] for r in rows]),
                    ref.proponent_scores, scale) < REL_TOL
    assert rel_diff(torch.tensor([r["opponent_scores"] for r in rows]),
                    ref.opponent_scores, scale) < REL_TOL
    assert rel_diff(scores_of(got), full) < REL_TOL
    assert "scores" not in post(served["fixed"].url, {"inputs": x.tolist(),
                                                      "targets": y.tolist()})[1]["results"][0]


def test_tensor_requests_answer_as_json_ones(served, test_rows):
    x, y = test_rows[0][:3], test_rows[1][:3]
    url = served["fixed"].url
    as_json = post(url, {"inputs": x.tolist(), "targets": y.tolist(), "k": 3})[1]
    as_tensors = post(url, {"tensors": encode_tensors(x, y), "k": 3})[1]
    assert as_json == as_tensors


def test_concurrent_requests_share_batches_and_get_their_own_answers(served, finished,
                                                                     test_rows):
    x, y = test_rows
    attr = Attributor.from_sweep(finished, FIXED)
    alone = torch.cat([attr.scores(x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
    url = served["fixed"].url

    def one(i: int) -> tuple[int, dict]:
        return post(url, {"inputs": x[i:i + 1].tolist(), "targets": y[i:i + 1].tolist(),
                          "k": 3, "scores": True})

    with ThreadPoolExecutor(len(x)) as pool:
        answers = list(pool.map(one, range(len(x))))
    assert all(status == 200 for status, _ in answers)
    got = torch.cat([scores_of(a) for _, a in answers])
    assert rel_diff(got, alone) < REL_TOL_BATCHED
    top = attr.top_k(x, y, k=3)
    assert [a["results"][0]["proponents"] for _, a in answers] == top.proponents.tolist()


def test_per_sample_masks_follow_start_as_in_the_stored_scores(served, finished, test_rows):
    x, y = test_rows
    stored = finished.scores(PER_SAMPLE)
    url = served["per-sample"].url
    starts = (0, 3, 5, 9)

    def rows_from(s: int) -> tuple[int, dict]:
        return post(url, {"inputs": x[s:s + 3].tolist(), "targets": y[s:s + 3].tolist(),
                          "start": s, "scores": True})

    with ThreadPoolExecutor(len(starts)) as pool:
        answers = list(pool.map(rows_from, starts))
    for s, (status, a) in zip(starts, answers):
        assert status == 200
        assert rel_diff(scores_of(a), stored[s:s + 3]) < REL_TOL
    # the same rows with other masks (start 0) score differently: start is honoured
    other = scores_of(post(url, {"inputs": x[5:8].tolist(), "targets": y[5:8].tolist(),
                                 "scores": True})[1])
    assert rel_diff(other, stored[5:8]) > 1e-3


BAD = [
    (b"{oops", 400, "body is not JSON"),
    ({"inputs": [[0.0] * 7], "targets": [0]}, 400, "expected [n, 8]"),
    ({"inputs": [["x"] * 8], "targets": [0]}, 400, "not numbers"),
    ({"inputs": [[0.0] * 8], "targets": [9]}, 400, "label 9 is outside 0..2"),
    ({"inputs": [[0.0] * 8], "targets": [0], "k": 61}, 400, "'k' must be in [1, 60]"),
    ({"inputs": [[0.0] * 8], "targets": [0], "colour": 1}, 400, "unknown field(s) 'colour'"),
    ({"inputs": [[0.0] * 8] * (MAX_BATCH + 1), "targets": [0] * (MAX_BATCH + 1)}, 413,
     f"at most {MAX_BATCH}"),
    (b" " * (MAX_BODY + 1), 413, "at most"),
]


def test_bad_requests_get_4xx_with_a_reason_and_the_replica_keeps_answering(served,
                                                                             test_rows):
    url = served["fixed"].url
    x, y = test_rows[0][:2], test_rows[1][:2]
    good = {"inputs": x.tolist(), "targets": y.tolist(), "k": 2}
    before = post(url, good)
    for body, status, needle in BAD:
        code, answer = post(url, body)
        assert code == status, (needle, answer)
        assert needle in answer["error"] and "\n" not in answer["error"]
    code, answer = post(url, good, method="PUT")
    assert code == 405 and "not allowed" in answer["error"]
    assert post(url, good) == before


def test_a_bad_request_cannot_fail_the_batch_it_arrives_with(served, finished, test_rows):
    url = served["fixed"].url
    x, y = test_rows
    goods = [{"inputs": x[i:i + 1].tolist(), "targets": y[i:i + 1].tolist(), "k": 2}
             for i in range(6)]
    expected = [post(url, g)[1] for g in goods]
    mixed = [b for pair in zip(goods, [body for body, _, _ in BAD[:6]]) for b in pair]
    with ThreadPoolExecutor(len(mixed)) as pool:
        answers = list(pool.map(lambda b: post(url, b), mixed))
    assert all(code == 400 for code, _ in answers[1::2])
    scale = float(finished.scores(FIXED).abs().max())
    assert all(code == 200 for code, _ in answers[0::2])
    for (_, got), want in zip(answers[0::2], expected):
        g, w = got["results"][0], want["results"][0]
        assert (g["proponents"], g["opponents"]) == (w["proponents"], w["opponents"])
        assert rel_diff(torch.tensor(g["proponent_scores"] + g["opponent_scores"]),
                        torch.tensor(w["proponent_scores"] + w["opponent_scores"]),
                        scale) < REL_TOL


def test_serve_running_on_another_port_is_refused(served, finished):
    with pytest.raises(SpecError, match="already runs on this Ray cluster"):
        deploy(finished, FIXED, port=free_port(), name="elsewhere")
    from ray import serve

    assert "elsewhere" not in serve.status().applications


def test_configurations_that_cannot_be_served_are_refused_before_ray(tmp_path):
    not_run = Sweep("toy-mlp", Method("trak", proj_dim=16), [FIXED], lds=None,
                    store=str(tmp_path / "empty"), progress=False)
    with pytest.raises(SpecError, match="has not run in store.*same flags"):
        deploy(not_run, FIXED)
    with pytest.raises(SpecError, match="no configuration of this sweep"):
        deploy(not_run, Ensemble("naive", 2))
    with pytest.raises(SpecError, match="replicas must be >= 1"):
        deploy(not_run, FIXED, replicas=0)


def test_cli_serves_until_sigterm_and_removes_only_its_app(served, finished, test_rows,
                                                          ray_session):
    """`raytda serve` joins the session's cluster, where Serve already listens on the
    module's port, serves the configuration named by its sweep flags, and on SIGTERM
    deletes its own application (Serve and the other apps stay) and exits 0."""
    from ray import serve

    args = [*FLAGS, "--ensemble", "dropout:I=1,D=3",
            "--store", str(finished.store.uri), "--port", str(served["port"]),
            "--address", ray_session.get_runtime_context().gcs_address,
            "--cpus-per-replica", "0.5", "--device", "cpu"]
    with serve_cli(args, "trak dropout I=1 D=3 on toy-mlp") as (url, stopped):
        assert url == f"http://127.0.0.1:{served['port']}/"
        x, y = test_rows[0][:2], test_rows[1][:2]
        body = {"inputs": x.tolist(), "targets": y.tolist(), "k": 3}
        assert post(url, body) == post(served["fixed"].url, body)
        assert "raytda" in serve.status().applications
    assert stopped["returncode"] == 0, stopped["err"]
    assert "raytda: serve stopped" in stopped["out"]
    apps = serve.status().applications
    assert "raytda" not in apps and {"fixed", "per-sample"} <= set(apps)
    assert post(served["fixed"].url, body)[0] == 200


def test_cli_serves_a_relative_out_from_another_directory(served, finished, test_rows,
                                                         ray_session, tmp_path):
    """`raytda serve --out run` started in a directory other than the Ray runtime's: the
    replicas (which run in the runtime's directory) read the store the CLI names, so the
    service comes up and answers as the one deployed with the absolute store."""
    # Where the runtime's workers (and so the replicas) run: not where the CLI runs.
    def cwd() -> str:  # nested: pickled by value (workers cannot import this module)
        return os.getcwd()

    replica_cwd = ray_session.get(ray_session.remote(num_cpus=0)(cwd).remote())
    assert replica_cwd != str(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "store").symlink_to(finished.store.root)  # OUT/store, the default
    args = [*FLAGS, "--ensemble", "dropout:I=1,D=3", "--out", "run",
            "--port", str(served["port"]),
            "--address", ray_session.get_runtime_context().gcs_address,
            "--cpus-per-replica", "0.5", "--device", "cpu"]
    with serve_cli(args, "trak dropout I=1 D=3 on toy-mlp", cwd=tmp_path) as (url, stopped):
        x, y = test_rows[0][:3], test_rows[1][:3]
        body = {"inputs": x.tolist(), "targets": y.tolist(), "k": 3}
        assert post(url, body) == post(served["fixed"].url, body)
    assert stopped["returncode"] == 0, stopped["err"]
