"""Imports the built-in ensemble kinds so that they register themselves."""

from raytda.ensembles import (  # noqa: F401
    checkpoints,
    checkpoints_dropout,
    dropout,
    dropout_forward,
    dropout_forward_shared,
    lora,
    naive,
    projection_only,
)
