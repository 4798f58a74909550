"""Store and data locations: made absolute in the driver, checked before any work starts."""

from __future__ import annotations

import os

from raytda.specs import SpecError


def is_uri(location: str) -> bool:
    """Whether ``location`` names a filesystem by scheme (``s3://b/p``, ``file:///x``)."""
    return "://" in location


def absolute_location(location: str) -> str:
    """``location`` as every process reads it the same way: a local path made absolute
    against this process's working directory (``~`` expanded); a URI unchanged.

    Ray workers and Serve replicas run in their own working directories (a Tune trial in
    its trial directory), so a relative path handed to them names another place; the
    driver resolves every path it is given with this before anything is sent."""
    if is_uri(location):
        return location
    return os.path.abspath(os.path.expanduser(location))


def check_store_uri(uri: str) -> None:
    """Fail before any work on a store URI no filesystem answers to (a local path always
    opens; its writability is checked by the sweep)."""
    if not is_uri(uri):
        return
    from raytda.store import ArtifactStore

    try:
        ArtifactStore(uri)
    except Exception as e:  # pyarrow: ArrowInvalid / ArrowNotImplementedError / OSError
        detail = " ".join(str(e).split()) or e.__class__.__name__
        raise SpecError(f"cannot open store {uri!r} ({detail}); give a local path or a URI "
                        f"pyarrow can open (file://, s3://, gs://, hdfs://)") from None
