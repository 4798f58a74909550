"""Imports the built-in ensemble kinds so that they register themselves."""

# isort: off
from raytda.ensembles import (  # noqa: F401
    checkpoints,
    checkpoints_dropout,
    dropout,
    dropout_forward,
    lora,
    naive,
    projection_only,
)

# Last: it declares a job of its own, and importing the job layer builds specs that name
# the kinds above.
from raytda.ensembles import dropout_forward_shared  # noqa: F401
# isort: on
