"""The one base type of every error raytda reports to its user.

Each says, in one line, what is wrong and how to fix it. Subclasses name the area
(:class:`~raytda.specs.SpecError` for what was asked, ``DataError`` for data files,
``StoreError`` and ``CorruptArtifact`` for the artifact store, ``CheckpointError`` for the
user's checkpoints, ``JobFailed`` for jobs that failed after their retries); they also keep
the standard base they had (``ValueError``, ``RuntimeError``) so existing handlers work.
Catch :class:`RaytdaError` to handle them all; anything else is a bug in raytda or in
user code it ran.
"""

from __future__ import annotations


class RaytdaError(Exception):
    """An error in what the user asked for or gave raytda; the message says how to fix it."""
