"""``raytda serve``: a finished ensemble configuration as an HTTP service on Ray Serve.

- :mod:`raytda.serving.protocol`: the request and answer format (no Ray);
- :mod:`raytda.serving.replica`: the Serve deployment, one Attributor per replica;
- :mod:`raytda.serving.app`: :func:`deploy` and :class:`Served` (Python entry);
- :mod:`raytda.serving.cli`: the ``raytda serve`` subcommand.

Not to be confused with :mod:`raytda.work.serve`, the batch jobs that compute a member's
train side in a sweep; this package only reads what those jobs stored.

Example::

    served = deploy(sweep, "dropout:I=1,D=10", port=8000)
    # POST {"inputs": [[...]], "targets": [3], "k": 5} to served.url
    # (a task with dict rows: {"rows": [{"input_ids": [...]}], "k": 5})
    served.shutdown()
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "deploy": "raytda.serving.app",
    "Served": "raytda.serving.app",
    "encode_tensors": "raytda.serving.protocol",
    "parse_request": "raytda.serving.protocol",
    "BadRequest": "raytda.serving.protocol",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    # Lazy, so `raytda --help` and the protocol need neither Ray Serve nor torch loaded.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raytda.serving' has no attribute {name!r}")
