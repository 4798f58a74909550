"""The torch device of a run, from the ``--device`` flag: ``auto``, ``cpu``, ``cuda``,
``cuda:N``; bad values fail before any work with one line saying what to pass instead."""

from __future__ import annotations

import re

from raytda.specs import SpecError

CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def _cuda_available() -> bool:
    import torch  # late: the flag is parsed before torch is needed anywhere else

    return bool(torch.cuda.is_available())


def _cuda_count() -> int:
    import torch

    return int(torch.cuda.device_count())


def resolve_device(name: str, *, on_cluster: bool = False) -> str:
    """The device string to compute on: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    ``auto`` is ``cuda`` when this process (the driver) sees CUDA, else ``cpu``. ``cuda``
    and ``cuda:N`` are checked against this machine, because that is where local jobs run.

    ``on_cluster=True`` (jobs run as Ray tasks elsewhere): ``cuda`` / ``cuda:N`` are not
    checked here, since a CPU-only head node is normal and the autoscaler adds GPU nodes
    only once GPU tasks ask for them; Ray gives each task its own GPU as ``cuda``. ``auto``
    still means "this process sees CUDA", so on a CPU head pass ``--device cuda``.
    """
    dev = name.strip().lower()
    if dev == "cpu":
        return "cpu"
    if dev == "auto":
        return "cuda" if _cuda_available() else "cpu"
    match = _CUDA_INDEX.fullmatch(dev)
    if dev != "cuda" and match is None:
        raise SpecError(f"unknown device {name!r}; choose one of {', '.join(CHOICES)}")
    if on_cluster:
        return dev
    if not _cuda_available():
        raise SpecError(f"--device {name}: CUDA is not available on this machine; "
                        f"use --device cpu or --device auto")
    if match is not None and int(match.group(1)) >= _cuda_count():
        raise SpecError(f"--device {name}: this machine has {_cuda_count()} CUDA device(s) "
                        f"(cuda:0 .. cuda:{_cuda_count() - 1}); use --device cuda or auto")
    return dev
