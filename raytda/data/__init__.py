"""Data: samples from tensors, torch Datasets or dict rows, and the built-in loaders.

``load_data`` (the built-in sources) is imported from :mod:`raytda.data.sources`; this
package only names the containers, so importing a loader never imports the others.
"""

from raytda.data.base import DataError, Dataset, TaskData
from raytda.data.collate import PadCollate
from raytda.data.samples import DatasetSamples, DictSamples, Samples, TensorSamples, as_samples

__all__ = ["DataError", "Dataset", "DatasetSamples", "DictSamples", "PadCollate", "Samples",
           "TaskData", "TensorSamples", "as_samples"]
