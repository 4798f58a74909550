"""Data: samples from tensors, torch Datasets or dict rows, and the built-in loaders.

The loaders (``raytda.data.mnist.load_mnist``, ...) take plain arguments and are imported
from their own modules; the built-in Tasks (:mod:`raytda.tasks`) call them. This package
only names the containers, so importing a loader never imports the others.
"""

from raytda.data.base import DataError, Dataset, TaskData
from raytda.data.collate import PadCollate
from raytda.data.samples import DatasetSamples, DictSamples, Samples, TensorSamples, as_samples

__all__ = ["DataError", "Dataset", "DatasetSamples", "DictSamples", "PadCollate", "Samples",
           "TaskData", "TensorSamples", "as_samples"]
