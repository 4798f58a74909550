"""Data: samples from tensors or torch Datasets, and the built-in loaders.

``load_data`` (the built-in sources) is imported from :mod:`raytda.data.sources`; this
package only names the containers, so importing a loader never imports the others.
"""

from raytda.data.base import DataError, Dataset, TaskData
from raytda.data.samples import DatasetSamples, Samples, TensorSamples, as_samples

__all__ = ["DataError", "Dataset", "DatasetSamples", "Samples", "TaskData", "TensorSamples",
           "as_samples"]
