"""Content-addressed artifact store (local directory or any pyarrow filesystem URI).

:mod:`~raytda.store.artifacts`: payload + record, both checksummed, written atomically;
:mod:`~raytda.store.lease`: one sweep computes an artifact, concurrent ones run other jobs;
:mod:`~raytda.store.holders`: whether a writing process is still alive;
:mod:`~raytda.store.verify`, :mod:`~raytda.store.gc` and :mod:`~raytda.store.usage`:
``raytda store verify|gc|du``.
"""

from raytda.store.artifacts import ArtifactStore, CorruptArtifact, StoreError

__all__ = ["ArtifactStore", "CorruptArtifact", "StoreError"]
