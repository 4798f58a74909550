"""Checking a store location before any work starts."""

from __future__ import annotations

from raytda.specs import SpecError


def check_store_uri(uri: str) -> None:
    """Fail before any work on a store URI no filesystem answers to (a local path always
    opens; its writability is checked by the sweep)."""
    if "://" not in uri:
        return
    from raytda.store import ArtifactStore

    try:
        ArtifactStore(uri)
    except Exception as e:  # pyarrow: ArrowInvalid / ArrowNotImplementedError / OSError
        detail = " ".join(str(e).split()) or e.__class__.__name__
        raise SpecError(f"cannot open store {uri!r} ({detail}); give a local path or a URI "
                        f"pyarrow can open (file://, s3://, gs://, hdfs://)") from None
