"""Dense score export: raytda's chunk-by-chunk safetensors writer against safetensors'
own ``save_file`` of the whole matrix, side by side in one process.

    python benchmarks/bench_dense_export.py [--n-test 2000] [--n-train 20000] [--rows 250]

``write_dense`` (raytda.export) holds one chunk of test rows at a time, as ``raytda scores
--dense`` does when it reads a configuration's score chunks from the store; ``save_file``
needs the whole n_test x n_train matrix in memory (and a transposed copy for the
n_train x n_test layout). The writers take turns (one of each per round), so they see the
same background load; the table gives the median of the rounds and the ratio to
``save_file``. Both files are read back and compared bit for bit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from raytda.export import write_dense


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--rows", type=int, default=250, help="test rows per chunk")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    full = torch.randn(a.n_test, a.n_train, generator=torch.Generator().manual_seed(0))
    chunks = [(slice(r, min(r + a.rows, a.n_test)), full[r:r + a.rows])
              for r in range(0, a.n_test, a.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        writers = {
            "write_dense test-train": lambda: write_dense(
                chunks, a.n_test, a.n_train, out / "tt.safetensors", "test-train"),
            "write_dense train-test": lambda: write_dense(
                chunks, a.n_test, a.n_train, out / "trt.safetensors", "train-test"),
            "save_file (whole matrix)": lambda: save_file(
                {"scores": torch.cat([c for _, c in chunks])}, str(out / "s.safetensors")),
            "save_file (whole, transposed)": lambda: save_file(
                {"scores": torch.cat([c for _, c in chunks]).T.contiguous()},
                str(out / "st.safetensors")),
        }
        times: dict[str, list[float]] = {k: [] for k in writers}
        for _ in range(a.rounds):
            for name, write in writers.items():
                t0 = time.perf_counter()
                write()
                times[name].append(time.perf_counter() - t0)
        assert torch.equal(load_file(str(out / "tt.safetensors"))["scores"], full)
        assert torch.equal(load_file(str(out / "trt.safetensors"))["scores"], full.T)
    base = statistics.median(times["save_file (whole matrix)"])
    print(f"{a.n_test} x {a.n_train} float32 ({full.numel() * 4 / 2**20:.0f} MiB), chunks of "
          f"{a.rows} test rows, median of {a.rounds} rounds")
    print(f"{'writer':32s} {'seconds':>8s} {'ratio':>6s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:32s} {med:8.3f} {med / base:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
