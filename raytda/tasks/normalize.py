"""The input normalization of the paper's image settings (torch-free: task classes state
it in their settings, which planning reads without loading data).

Per-dataset (mean, std) of dattri 0.3.0's benchmark loaders (benchmark/datasets/mnist and
.../cifar: torchvision ``Normalize((0.1307,), (0.3081,))`` and ``Normalize((0.5,) * 3,
(0.5,) * 3)`` after ``ToTensor``), which the paper's experiments use. The loaders in
:mod:`raytda.data` apply ``(v - mean) / std`` to pixels scaled to [0, 1].
"""

from __future__ import annotations

PAPER_NORMALIZE: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "cifar2": (0.5, 0.5),
}
