"""Content-addressed artifact store (local directory or any pyarrow filesystem URI)."""

from raytda.store.artifacts import ArtifactStore, CorruptArtifact, StoreError

__all__ = ["ArtifactStore", "CorruptArtifact", "StoreError"]
