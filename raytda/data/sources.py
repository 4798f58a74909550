"""The built-in data sources by name: a DataSpec's ``source`` picks its loader here.

A source is a loader ``DataSpec -> Dataset``; ``register_source`` adds one (a user's own
data is better served by a Task, which takes tensors or any torch Dataset).
"""

from __future__ import annotations

from collections.abc import Callable

from raytda.data.base import DataError, Dataset
from raytda.data.cifar2 import load_cifar2
from raytda.data.digits import load_digits
from raytda.data.mnist import load_mnist
from raytda.data.synthetic import load_synthetic
from raytda.data.text import load_synthetic_text, load_text
from raytda.specs import DataSpec

Loader = Callable[[DataSpec], Dataset]

SOURCES: dict[str, Loader] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "cifar2": load_cifar2,
    "synthetic": load_synthetic,
    "text": load_text,
    "synthetic-text": load_synthetic_text,
}


def register_source(name: str, loader: Loader) -> None:
    """Make ``DataSpec(source=name, ...)`` load with ``loader``."""
    SOURCES[name] = loader


def load_data(spec: DataSpec) -> Dataset:
    """Load the samples a DataSpec describes."""
    loader = SOURCES.get(spec.source)
    if loader is None:
        raise DataError(f"unknown data source {spec.source!r}; choose one of {sorted(SOURCES)}")
    return loader(spec)
