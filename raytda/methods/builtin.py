"""Imports the built-in methods so that they register themselves."""

from raytda.methods import ekfac, grad_cos, grad_dot, influence, trak  # noqa: F401
