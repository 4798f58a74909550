"""Data sources. Each loader returns a :class:`Dataset` of float features and int labels."""

from raytda.data.base import DataError, Dataset, load_data

__all__ = ["Dataset", "DataError", "load_data"]
