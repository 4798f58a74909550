"""How much TRAK's predictions depend on the projection drawn: dense against sketch.

One MNIST-MLP model (the paper's recipe, ``--epochs`` of it) and its exact per-sample
gradients; TRAK scores without Q, S = Phi_test (Phi^T Phi)^-1 Phi^T, under several
projection seeds per features part; for each pair of draws, how alike their predictions
are where LDS reads them: per test sample, the Spearman correlation over 50 random halves
of the train set of the summed scores (what LDS correlates with retrained margins),
averaged over test samples. A part whose predictions agree less from draw to draw makes
an LDS that moves more with the draw. Also each draw against a dense k = 4096 draw.

    python benchmarks/draw_agreement.py --data-dir ../shared/data/mnist --epochs 20
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raytda.core.args import ComputeArgs  # noqa: E402
from raytda.core.outputs import CLASSIFICATION  # noqa: E402
from raytda.core.projection import GaussianProjector  # noqa: E402
from raytda.core.train import fit, load_weights, seeded_init  # noqa: E402
from raytda.data.samples import as_samples  # noqa: E402
from raytda.features import features_from  # noqa: E402

from common import DEFAULT_DATA, load_mnist_task, log, table  # noqa: E402


def trak_scores(train: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """(m, n) TRAK scores without Q, in float64 (k < n: the kernel is invertible)."""
    f, ft = train.double(), test.double()
    return (ft @ torch.linalg.solve(f.T @ f, f.T)).float()


def agreement(a: torch.Tensor, b: torch.Tensor, halves: torch.Tensor) -> float:
    """Mean over test samples of the Spearman correlation of two draws' subset sums."""
    sa, sb = a @ halves.T, b @ halves.T
    return float(np.mean([spearmanr(sa[i], sb[i])[0] for i in range(sa.shape[0])]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--subsets", type=int, default=50)
    a = p.parse_args()
    loaded = load_mnist_task(a)
    if loaded is None:
        return
    task, data = loaded
    x, y = data.x_train, data.y_train
    seeded_init(0)
    trained = task.build_model()
    fit(trained, task.recipe, (x, y), 0)
    net = load_weights(task.build_model(), trained.state_dict(), x[:1])
    train, test = as_samples((x, y)), as_samples((data.x_test, data.y_test))
    args = ComputeArgs(grad_batch=500, sparse_inputs=False)

    def featurize(part: str, k: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        fz = features_from(part).featurizer(net, k, seed, args, CLASSIFICATION, None, keep=False)
        return fz.features(train, None, "train"), fz.features(test, None, "test")

    grads, grads_test = featurize("dense", None, 0)

    def dense(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        proj = GaussianProjector(grads.shape[1], k, seed).matrix()
        return grads @ proj, grads_test @ proj

    g = torch.Generator().manual_seed(7)
    halves = torch.zeros(a.subsets, len(y))
    for row in halves:
        row[torch.randperm(len(y), generator=g)[:len(y) // 2]] = 1.0
    reference = trak_scores(*dense(2 * a.k, 10_000))
    rows = []
    for name, make in [(f"dense k={a.k}", lambda s: dense(a.k, s)),
                       (f"dense k={a.k // 2}", lambda s: dense(a.k // 2, s)),
                       (f"sketch k={a.k}", lambda s: featurize("sketch", a.k, s))]:
        t0 = time.time()
        scores = [trak_scores(*make(s)) for s in range(a.draws)]
        pairs = [agreement(scores[i], scores[j], halves)
                 for i, j in itertools.combinations(range(a.draws), 2)]
        to_ref = [agreement(s, reference, halves) for s in scores]
        rows.append([name, f"{np.mean(pairs):.3f} ({min(pairs):.3f}-{max(pairs):.3f})",
                     f"{np.mean(to_ref):.3f} ({min(to_ref):.3f}-{max(to_ref):.3f})"])
        log(f"{name}: {time.time() - t0:.0f} s")
    print(f"MNIST-MLP, {a.epochs} epochs, n = {len(y)}, {a.draws} draws, {a.subsets} halves")
    print(table(["features", "draw vs draw: mean (range)", f"vs dense k={2 * a.k}"], rows))


if __name__ == "__main__":
    main()
