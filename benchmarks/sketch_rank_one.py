"""Check the variance formulas of raytda.core.tensor_sketch on synthetic gradient blocks.

For a block X (rows x cols) of rank r (a sum of r random outer products, like r positions
of one layer), the relative variance k * Var<Sx, Sx> / |X|^4 over random sketches, for a
dense Gaussian (theory 2), a fully random CountSketch (theory 2 - 2 sum x^4 / |X|^4),
TensorSketch (theory 2 + 4 sum sigma^4 / |X|^4: 6 for rank one) and the Gaussian
Khatri-Rao sketch (theory 2 + 6 sum sigma^4 / |X|^4: 8 for rank one).

Usage::

    python benchmarks/sketch_rank_one.py            # ~1 min on one core
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--cols", type=int, default=40)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--trials", type=int, default=4000)
    a = p.parse_args()
    r_, c_, k = a.rows, a.cols, a.k
    gen = torch.Generator().manual_seed(0)
    print(f"| rank | sum s^4 / |X|^4 | dense | CountSketch | TensorSketch | Khatri-Rao |"
          f" theory TS | theory KR |\n|---|---|---|---|---|---|---|---|")
    for rank in (1, 2, 8, 32):
        x = sum(torch.outer(torch.randn(r_, generator=gen), torch.randn(c_, generator=gen))
                for _ in range(rank)).double()
        norm2 = float((x ** 2).sum())
        s4 = float((torch.linalg.svdvals(x) ** 4).sum()) / norm2 ** 2
        est = {n: [] for n in ("dense", "cs", "ts", "kr")}
        flat = x.reshape(-1)
        for _ in range(a.trials):
            g = torch.randn(k, flat.numel(), generator=gen, dtype=torch.float64) / k ** 0.5
            est["dense"].append(float((g @ flat).pow(2).sum()))
            h = torch.randint(0, k, (flat.numel(),), generator=gen)
            s = torch.randint(0, 2, (flat.numel(),), generator=gen).double() * 2 - 1
            est["cs"].append(float(torch.zeros(k, dtype=torch.float64).index_add_(
                0, h, flat * s).pow(2).sum()))
            h1, h2 = (torch.randint(0, k, (n,), generator=gen) for n in (r_, c_))
            s1, s2 = (torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1
                      for n in (r_, c_))
            idx = ((h1[:, None] + h2[None, :]) % k).reshape(-1)
            sign = (s1[:, None] * s2[None, :]).reshape(-1)
            est["ts"].append(float(torch.zeros(k, dtype=torch.float64).index_add_(
                0, idx, flat * sign).pow(2).sum()))
            w = torch.randn(k, r_, generator=gen, dtype=torch.float64)
            z = torch.randn(k, c_, generator=gen, dtype=torch.float64)
            phi = ((w @ x) * z).sum(1) / k ** 0.5
            est["kr"].append(float(phi.pow(2).sum()))
        rel = {n: k * torch.tensor(v).var().item() / norm2 ** 2 for n, v in est.items()}
        print(f"| {rank} | {s4:.3f} | {rel['dense']:.2f} | {rel['cs']:.2f} | {rel['ts']:.2f} |"
              f" {rel['kr']:.2f} | {2 + 4 * s4:.2f} | {2 + 6 * s4:.2f} |")


if __name__ == "__main__":
    main()
