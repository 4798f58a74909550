"""Where dense gradient features stop being affordable: time and memory per sample of each
features part at k = 2048, on MLPs, convnets and transformers of growing size.

    python benchmarks/bench_features_threshold.py                 # every row
    python benchmarks/bench_features_threshold.py --parts dense,sketch --only mlp

Each row is one (model, size, part) in its own subprocess (so its peak memory is its own):
the part's featurizer of one member (``GradientFeatures.featurizer``, as a sweep's member
job builds it, with raytda's default ComputeArgs: P resident while it fits 1 GiB, else
drawn again per batch) featurizes ``--samples`` synthetic samples twice. ``first s/sample``
includes building what the featurizer keeps (the dense part's P, drawn once per member
and process); ``steady s/sample`` is the second pass, what each further row costs.
``peak MB`` is the growth of ru_maxrss from after the model and inputs exist to the end of
both passes. Plain forward + backward passes over the same samples, in the same process,
give ``x fwd+bwd`` (the machine is shared: the multiple cancels most of the load).

The dense part costs per sample a per-sample gradient (p numbers) and a p x k product,
plus P's draw (p x k normals) once per member, or per batch once P is over its budget
(p * k * 4 bytes > 1 GiB, p > 131k at k = 2048).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

K = 2048
REPO = Path(__file__).resolve().parents[1]

#: family -> sizes (a width knob per family; the parameter count is printed)
SIZES = {
    "mlp": [32, 128, 512, 1024, 2048],        # 784-h-h/2-10
    "convnet": [0.125, 0.25, 0.5],            # ResNet-9 width (4.83M at 1.0)
    "transformer": [32, 64, 128, 256],        # GPT 2 layers, d_model, 64 tokens
}


def build(family: str, size: float):
    """(Network, x, y, output) with synthetic inputs of the right shape."""
    from raytda.core.network import Network
    from raytda.core.outputs import CLASSIFICATION, GENERATIVE

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if family == "mlp":
        from raytda.models.mlp import MLP

        h = int(size)
        module = MLP(784, (h, max(1, h // 2)), 10, 0.1)
        x = torch.randn(512, 784, generator=gen)
        return Network(module, x[:1]), x, torch.randint(0, 10, (512,), generator=gen), \
            CLASSIFICATION
    if family == "convnet":
        from raytda.models.resnet9 import ResNet9

        module = ResNet9(num_classes=2, dropout=0.1, width=float(size))
        x = torch.randn(512, 3, 32, 32, generator=gen)
        return Network(module, x[:1]), x, torch.randint(0, 2, (512,), generator=gen), \
            CLASSIFICATION
    if family == "transformer":
        from raytda.models.gpt import GPT

        d = int(size)
        module = GPT(256, 2, 4, d, 64, 0.1)
        seq = torch.randint(0, 256, (512, 65), generator=gen)
        x, y = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
        return Network(module, x[:1], mask_dims=1), x, y, GENERATIVE
    raise ValueError(family)


def run_row(family: str, size: float, part: str, samples: int) -> dict:
    from raytda.core.args import ComputeArgs
    from raytda.core.grads import n_trainable
    from raytda.data.samples import TensorSamples
    from raytda.features import features_from

    net, x, y, output = build(family, size)
    net.eval()
    x, y = x[:samples], y[:samples]
    data = TensorSamples(x, y)
    args = ComputeArgs(device="cpu")
    params = n_trainable(net)

    def plain() -> float:
        t0 = time.perf_counter()
        for b0 in range(0, samples, 64):
            net.zero_grad(set_to_none=True)
            output.f(net(x[b0:b0 + 64]), y[b0:b0 + 64]).sum().backward()
        return time.perf_counter() - t0

    plain()  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fz = features_from(part).featurizer(net, K, 0, args, output, None, keep=False)
    t0 = time.perf_counter()
    fz.features(data, None, "train")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fz.features(data, None, "train")
    steady = time.perf_counter() - t0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    plain_s = min(plain() for _ in range(2))
    return {"family": family, "size": size, "params": params, "part": part,
            "samples": samples, "first": first / samples, "steady": steady / samples,
            "x_plain": steady / plain_s, "peak_mb": peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="dense,factorized")
    p.add_argument("--only", default=None, help="one family: mlp, convnet or transformer")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--max-dense-params", type=int, default=3_000_000,
                   help="skip dense rows above this many parameters (P is streamed there: "
                        "benchmarks/README.md table 1 has them)")
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--row-out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.row:
        family, size, part = a.row.split(":")
        Path(a.row_out).write_text(json.dumps(run_row(family, float(size), part, a.samples)))
        return 0
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load "
          f"{Path('/proc/loadavg').read_text().split()[:3]}, k = {K}, "
          f"{a.samples} samples per row")
    print("| family | size | params | part | first s/sample | steady s/sample | x fwd+bwd | "
          "peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for family, sizes in SIZES.items():
        if a.only and family != a.only:
            continue
        for size in sizes:
            for part in a.parts.split(","):
                with tempfile.NamedTemporaryFile(suffix=".json") as out:
                    cmd = [sys.executable, __file__, "--row", f"{family}:{size}:{part}",
                           "--row-out", out.name, "--samples", str(a.samples)]
                    if part == "dense":  # count first: dense above the cap is skipped
                        net = build(family, size)[0]
                        n = sum(q.numel() for q in net.parameters() if q.requires_grad)
                        if n > a.max_dense_params:
                            print(f"| {family} | {size} | {n:,} | dense | skipped (P "
                                  f"{n * K * 4 / 2**30:.0f} GiB, streamed) | | | |", flush=True)
                            continue
                    done = subprocess.run(cmd, capture_output=True, text=True)
                    if done.returncode:
                        print(f"| {family} | {size} | | {part} | failed: "
                              f"{done.stderr.strip().splitlines()[-1][:80]} | | | |", flush=True)
                        continue
                    r = json.loads(Path(out.name).read_text())
                print(f"| {family} | {size} | {r['params']:,} | {part} | {r['first']:.4f} | "
                      f"{r['steady']:.4f} | {r['x_plain']:.2f} | "
                      f"{r['peak_mb']:.0f} |" if math.isfinite(r["steady"]) else "", flush=True)
    print(f"# end load {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
