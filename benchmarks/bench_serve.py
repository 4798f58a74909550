"""`raytda serve` under load: requests/s and latency over HTTP on 127.0.0.1.

One command (no downloads; digits are bundled with scikit-learn, token rows are
synthetic)::

    python benchmarks/bench_serve.py                  # --inputs digits,tokens

Not to be confused with ``bench_serving.py`` (TRAK's batch serving against dattri): this
one measures the HTTP service of :mod:`raytda.serving`.

It runs a small sweep per workload in a temporary store, TRAK with k = --proj-dim (256),
Dropout Ensemble I=1 D=4 (4 members):

- ``digits``: digits-mlp, 1000 train samples, one 64-float input and its label per
  request (--epochs 5 instead of the recipe's 30, since serving cost does not depend on
  training length);
- ``tokens``: a GPT-2-shaped causal LM from ``transformers`` (2 layers, n_embd 32,
  vocabulary 64; --token-train rows, 128) on synthetic token rows of 8 to 32 ids, one row
  per request as ``{"rows": [{"input_ids": [...]}]}``, padded by the task's collate
  (rows of other lengths share a scoring call);

then starts a local Ray runtime (--num-cpus, no dashboard), and for every workload and
(replicas, max batch size) of the grid:

- deploys the configuration (each replica loads the stored train side itself, one CPU
  each; Serve itself stays up across the grid), sends --warmup requests, then a fixed
  number (--requests) of one-input requests from --clients concurrent client threads
  (one keep-alive connection each);
- reports requests/s (requests over the wall time of the whole load), and the median and
  99th percentile of the per-request latency seen by the clients;
- checks the first answer against the in-process Attributor's top-k of the same input.

Beside each row, the in-process Attributor is timed on the same inputs just before the
HTTP load (--baseline-requests calls, one input per call, sequential, one torch thread,
in this process): the ratio compares the two measured side by side, under the same
background load. Clients, Serve's proxy and the replicas
share this machine's cores, so the numbers are for the machine as a whole.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from raytda import Recipe, Sweep, Task
from raytda.attributor import Attributor
from raytda.core.outputs import CAUSAL_LM, next_token_cross_entropy
from raytda.data.collate import PadCollate
from raytda.data.samples import DictSamples
from raytda.ensembles import Ensemble, parse_ensemble
from raytda.methods import Method
from raytda.serving import deploy

from common import log, table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def load(port: int, path: str, bodies: list[bytes], clients: int
         ) -> tuple[float, list[float], list[dict]]:
    """Send every body once, from ``clients`` threads with a keep-alive connection each;
    (wall seconds, per-request latencies, answers in body order)."""
    latencies: list[float] = [0.0] * len(bodies)
    answers: list[dict] = [{}] * len(bodies)
    errors: list[str] = []
    next_i = iter(range(len(bodies)))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                conn.request("POST", path, bodies[i], {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                latencies[i] = time.perf_counter() - t0
                if r.status != 200:
                    errors.append(f"{r.status} {data[:200]!r}")
                    return
                answers[i] = json.loads(data)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return wall, latencies, answers


def parse_grid(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


class TokenLM(Task):
    """A GPT-2-shaped causal LM on token rows of ragged lengths (what a tokenizer gives):
    2 layers, n_embd 32, a 64-token vocabulary; labels made from input_ids by the collate.
    Seeded synthetic rows, so nothing is downloaded."""

    name = "bench-token-lm"
    version = "1"
    dropout_mask_dims = 1
    recipe = Recipe(optimizer="adam", lr=3e-3, batch_size=16, epochs=2)
    vocab, positions = 64, 64

    def __init__(self, n_train: int = 128, n_test: int = 32, lo: int = 8, hi: int = 33) -> None:
        self.n_train, self.n_test, self.lo, self.hi = n_train, n_test, lo, hi
        self.collate = PadCollate(labels_from="input_ids")

    def config(self) -> dict:
        return {"n_train": self.n_train, "n_test": self.n_test, "lengths": [self.lo, self.hi]}

    def rows(self, n: int, seed: int) -> list[dict]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            length = int(torch.randint(self.lo, self.hi, (1,), generator=g))
            out.append({"input_ids": torch.randint(1, self.vocab, (length,), generator=g).tolist(),
                        "attention_mask": [1] * length})
        return out

    def build_model(self) -> torch.nn.Module:
        import transformers

        transformers.utils.logging.set_verbosity_error()  # bos/eos ids beyond a tiny vocab
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=self.vocab, n_positions=self.positions, n_embd=32, n_layer=2, n_head=2,
            attn_pdrop=0.0, embd_pdrop=0.1, resid_pdrop=0.1, attn_implementation="eager"))

    def output(self):
        return CAUSAL_LM

    def loss(self, logits, y):
        return next_token_cross_entropy(logits, y)

    def train_data(self):
        return DictSamples(self.rows(self.n_train, 0), collate=self.collate)

    def test_data(self):
        return DictSamples(self.rows(self.n_test, 1), collate=self.collate)


@dataclass
class Workload:
    """One served configuration and its requests: body i asks for input i's top-10, and
    ``call(i)`` is the in-process Attributor call for the same input."""

    label: str
    sweep: Sweep
    ens: Ensemble
    bodies: list[bytes]
    call: Callable[[int], object]
    top: Callable[[int], list[int]]


def digits_workload(a: argparse.Namespace, store: str, n_req: int) -> Workload:
    """digits-mlp: one 64-float input and its label per request."""
    ens = parse_ensemble(a.ensemble)
    sweep = Sweep("digits-mlp", Method("trak", proj_dim=a.proj_dim), [ens], lds=None,
                  store=store, progress=False, epochs=a.epochs)
    sweep.run()
    x, y = sweep.spec.tasks[0].data().test.tensors()
    rows_of = [i % len(x) for i in range(n_req)]
    bodies = [json.dumps({"inputs": x[i:i + 1].tolist(), "targets": y[i:i + 1].tolist(),
                          "k": 10}).encode() for i in rows_of]
    attr = Attributor.from_sweep(sweep, ens)

    def call(i: int) -> object:
        r = rows_of[i]
        return attr.scores(x[r:r + 1], y[r:r + 1])

    def top(i: int) -> list[int]:
        r = rows_of[i]
        return attr.top_k(x[r:r + 1], y[r:r + 1], k=10).proponents[0].tolist()

    return Workload("digits-mlp, tensors", sweep, ens, bodies, call, top)


def token_workload(a: argparse.Namespace, store: str, n_req: int) -> Workload:
    """TokenLM: one token row of 8 to 32 ids per request, no mask, no labels (the
    collate makes them), padded by the task's collate."""
    ens = parse_ensemble(a.ensemble)
    task = TokenLM(a.token_train)
    sweep = Sweep(task, Method("trak", proj_dim=a.proj_dim), [ens], lds=None, store=store,
                  progress=False)
    sweep.run()
    test = task.rows(task.n_test, 1)
    rows_of = [{"input_ids": test[i % len(test)]["input_ids"]} for i in range(n_req)]
    bodies = [json.dumps({"rows": [r], "k": 10}).encode() for r in rows_of]
    attr = Attributor.from_sweep(sweep, ens)
    return Workload(f"GPT-2-shaped LM, token rows ({task.lo}-{task.hi - 1} ids)", sweep, ens,
                    bodies, lambda i: attr.scores([rows_of[i]]),
                    lambda i: attr.top_k([rows_of[i]], k=10).proponents[0].tolist())


WORKLOADS = {"digits": digits_workload, "tokens": token_workload}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", default="digits,tokens",
                   help="workloads (comma list): digits (tensor rows), tokens (token rows "
                        "of a GPT-2-shaped LM)")
    p.add_argument("--ensemble", default="dropout:I=1,D=4")
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--epochs", type=int, default=5, help="digits-mlp training epochs")
    p.add_argument("--token-train", type=int, default=128, help="train rows of the token LM")
    p.add_argument("--replicas", default="1,2", help="replica counts (comma list)")
    p.add_argument("--batch-sizes", default="1,16", help="max batch sizes (comma list)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--requests", type=int, default=200, help="timed requests per row")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--baseline-requests", type=int, default=40,
                   help="in-process calls timed before each Serve row")
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray runtime")
    p.add_argument("--store", help="reuse this store (default: a temporary one)")
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.inputs.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(WORKLOADS))
    if unknown or not kinds:
        p.error(f"--inputs takes {', '.join(WORKLOADS)}, got {a.inputs!r}")

    torch.set_num_threads(1)
    tmp = None if a.store else tempfile.mkdtemp(prefix="bench-serve-")
    store = a.store or os.path.join(tmp, "store")
    n_req = a.warmup + a.requests
    try:
        work = []
        for kind in kinds:
            t0 = time.perf_counter()
            work.append(WORKLOADS[kind](a, store, n_req))
            log(f"sweep {work[-1].label}: {time.perf_counter() - t0:.1f} s")

        import ray
        from ray import serve

        ray.init(address="local", num_cpus=a.num_cpus, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
        port = free_port()
        rows: list[list[object]] = []
        # Serve stays up across the grid (each deploy then replaces only the application).
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            for w in work:
                for i in range(a.warmup):
                    w.call(i)
                ref = w.top(a.warmup)

                def in_process(w: Workload = w) -> float:
                    """Requests/s of the in-process Attributor, one input per call."""
                    t0 = time.perf_counter()
                    for i in range(a.warmup, a.warmup + a.baseline_requests):
                        w.call(i)
                    return a.baseline_requests / (time.perf_counter() - t0)

                for replicas in parse_grid(a.replicas):
                    for mbs in parse_grid(a.batch_sizes):
                        t0 = time.perf_counter()
                        served = deploy(w.sweep, w.ens, port=port, replicas=replicas,
                                        max_batch_size=mbs, batch_wait_ms=a.batch_wait_ms,
                                        name="bench")
                        up = time.perf_counter() - t0
                        try:
                            load(port, "/", w.bodies[:a.warmup], a.clients)
                            # side by side: the in-process rate just before the HTTP load
                            base = in_process()
                            wall, lat, answers = load(port, "/", w.bodies[a.warmup:], a.clients)
                        finally:
                            served.shutdown()
                        same = answers[0]["results"][0]["proponents"] == ref
                        rps = a.requests / wall
                        rows.append([w.label, replicas, mbs, f"{rps:.1f}",
                                     f"{statistics.median(lat) * 1e3:.1f}",
                                     f"{percentile(lat, 99) * 1e3:.1f}", f"{base:.1f}",
                                     f"{rps / base:.2f}x", "yes" if same else "NO"])
                        log(f"{w.label}, replicas {replicas}, max batch {mbs}: {rps:.1f} "
                            f"req/s, in-process {base:.1f}/s (deployed in {up:.1f} s)")
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    for w in work:
        task = w.sweep.spec.tasks[0]
        print(f"\n{w.label}: {task.name}, TRAK k={a.proj_dim}, {w.ens.label} "
              f"({len(w.sweep.evaluation(w.ens).blocks())} members), n_train="
              f"{task.data().n_train}")
    print(f"{a.requests} timed one-input requests per row (+{a.warmup} warm-up), batch wait "
          f"{a.batch_wait_ms:g} ms, {a.clients} clients; Ray with {a.num_cpus} CPUs, one per "
          f"replica; machine: {os.cpu_count()} cores\n")
    print(table(["inputs", "replicas", "max batch", "Serve req/s", "p50 ms", "p99 ms",
                 "in-process req/s", "Serve / in-process", "top-10 = Attributor"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
