"""`raytda serve` under load: requests/s and latency over HTTP on 127.0.0.1.

One command (no downloads; digits are bundled with scikit-learn)::

    python benchmarks/bench_serve.py

Not to be confused with ``bench_serving.py`` (TRAK's batch serving against dattri): this
one measures the HTTP service of :mod:`raytda.serving`.

It runs a small sweep in a temporary store (digits-mlp, 1000 train samples, TRAK with
k = --proj-dim (256), Dropout Ensemble I=1 D=4: 4 members; --epochs 5 instead of the
recipe's 30, since serving cost does not depend on training length), starts a local Ray runtime
(--num-cpus, no dashboard), and then for every (replicas, max batch size) of the grid:

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

import torch

from raytda import Sweep
from raytda.attributor import Attributor
from raytda.ensembles import parse_ensemble
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ensemble", default="dropout:I=1,D=4")
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--epochs", type=int, default=5)
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

    torch.set_num_threads(1)
    tmp = None if a.store else tempfile.mkdtemp(prefix="bench-serve-")
    store = a.store or os.path.join(tmp, "store")
    try:
        ens = parse_ensemble(a.ensemble)
        t0 = time.perf_counter()
        sweep = Sweep("digits-mlp", Method("trak", proj_dim=a.proj_dim), [ens], lds=None,
                      store=store, progress=False, epochs=a.epochs)
        sweep.run()
        log(f"sweep {ens.label}: {time.perf_counter() - t0:.1f} s")
        x, y = sweep.spec.tasks[0].data().test.tensors()
        n_req = a.warmup + a.requests
        rows_of = [i % len(x) for i in range(n_req)]
        bodies = [json.dumps({"inputs": x[i:i + 1].tolist(), "targets": y[i:i + 1].tolist(),
                              "k": 10}).encode() for i in rows_of]

        attr = Attributor.from_sweep(sweep, ens)
        first = rows_of[a.warmup]
        ref = attr.top_k(x[first:first + 1], y[first:first + 1], k=10)
        for i in rows_of[:a.warmup]:
            attr.scores(x[i:i + 1], y[i:i + 1])

        def in_process() -> float:
            """Requests/s of the in-process Attributor, one input per call, sequential."""
            t0 = time.perf_counter()
            for i in rows_of[a.warmup:a.warmup + a.baseline_requests]:
                attr.scores(x[i:i + 1], y[i:i + 1])
            return a.baseline_requests / (time.perf_counter() - t0)

        import ray
        from ray import serve

        ray.init(address="local", num_cpus=a.num_cpus, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
        port = free_port()
        rows: list[list[object]] = []
        # Serve stays up across the grid (each deploy then replaces only the application).
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            for replicas in parse_grid(a.replicas):
                for mbs in parse_grid(a.batch_sizes):
                    t0 = time.perf_counter()
                    served = deploy(sweep, ens, port=port, replicas=replicas,
                                    max_batch_size=mbs, batch_wait_ms=a.batch_wait_ms,
                                    name="bench")
                    up = time.perf_counter() - t0
                    try:
                        load(port, "/", bodies[:a.warmup], a.clients)
                        # side by side: the in-process rate just before the HTTP load
                        base = in_process()
                        wall, lat, answers = load(port, "/", bodies[a.warmup:], a.clients)
                    finally:
                        served.shutdown()
                    same = answers[0]["results"][0]["proponents"] == ref.proponents[0].tolist()
                    rps = a.requests / wall
                    rows.append([replicas, mbs, f"{rps:.1f}",
                                 f"{statistics.median(lat) * 1e3:.1f}",
                                 f"{percentile(lat, 99) * 1e3:.1f}", f"{base:.1f}",
                                 f"{rps / base:.2f}x", "yes" if same else "NO"])
                    log(f"replicas {replicas}, max batch {mbs}: {rps:.1f} req/s, in-process "
                        f"{base:.1f}/s (deployed in {up:.1f} s)")
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{sweep.spec.tasks[0].name}, TRAK k={a.proj_dim}, {ens.label} "
          f"({len(sweep.evaluation(ens).blocks())} members), n_train="
          f"{sweep.spec.tasks[0].data().n_train}; {a.requests} timed one-input requests "
          f"(+{a.warmup} warm-up), batch wait {a.batch_wait_ms:g} ms; Ray with "
          f"{a.num_cpus} CPUs, one per replica; machine: {os.cpu_count()} cores\n")
    print(table(["replicas", "max batch", "Serve req/s", "p50 ms", "p99 ms",
                 "in-process req/s", "Serve / in-process", "top-10 = Attributor"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
