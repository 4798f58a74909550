"""Imports the built-in gradient-feature parts so that they register themselves."""

from raytda.features import dense, factorized, sketch  # noqa: F401
