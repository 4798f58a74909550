"""Checking on the nodes of a Ray cluster that the paths a driver was given are there.

The driver makes every path it is given absolute (:func:`raytda.store.uri.absolute_location`),
but an absolute path names the same directory on another node only if that node mounts it
at the same place. A store or data directory a worker cannot see would otherwise fail
every job after the cluster has started working; this check runs one zero-CPU Ray task per
alive node first and turns the first path missing on any node into one error line.

It changes nothing on the nodes: a store directory passes when it exists, or when its
nearest existing parent is a directory the node may write into (the sweep creates the
rest); a data directory passes when it exists. URIs (``s3://``, ``gs://``, ...) are not
checked here: every node opens them through their filesystem. The driver's own node is
skipped: the driver has checked that one itself (store writable, data readable), so on
one machine the check sends nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from raytda.errors import RaytdaError
from raytda.store.uri import is_uri

log = logging.getLogger(__name__)

#: How long the nodes may take to answer (a node's first task starts a worker process).
DEFAULT_TIMEOUT_S = 60.0


class PathNotOnNode(RaytdaError, FileNotFoundError):
    """A path the driver was given does not exist (or cannot be created) on a Ray node."""


@dataclass(frozen=True)
class NodePath:
    """A path every node must see: ``what`` names it for the user (e.g. ``"store"``)."""

    path: str
    what: str
    creatable: bool  # a store: may not exist yet if the node can create it


def store_path(uri: str, must_exist: bool = False) -> list[NodePath]:
    """The store to check on the nodes: nothing for a URI, else its directory, which a
    sweep may create (``must_exist`` for readers of a finished store, such as Serve)."""
    return [] if is_uri(uri) else [NodePath(uri, "store", creatable=not must_exist)]


def data_paths(tasks: Iterable[object]) -> list[NodePath]:
    """The data directories the tasks were given (``--data-dir`` / ``data_dir=``) that
    exist here, on the driver: a task that reads no files ignores a given directory, and
    one missing on the driver is the task's own error there."""
    out: list[NodePath] = []
    for task in tasks:
        given = getattr(task, "data_dir", None)
        if not given or is_uri(str(given)) or not os.path.isdir(given):
            continue
        if getattr(type(task), "DATA_NAME", None) == "":  # a built-in that reads no files
            continue
        item = NodePath(str(given), f"data directory of {getattr(task, 'name', 'a task')}",
                        creatable=False)
        if item not in out:
            out.append(item)
    return out


def missing_here(paths: list[NodePath]) -> list[str]:
    """The paths this process cannot see, each as a short reason (run on every node)."""
    problems = []
    for p in paths:
        if os.path.isdir(p.path):
            continue
        if not p.creatable:
            problems.append(f"{p.what} {p.path} does not exist")
            continue
        parent = p.path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            problems.append(f"{p.what} {p.path} cannot be created ({parent} is not a "
                            f"directory)")
        elif not os.access(parent, os.W_OK | os.X_OK):
            problems.append(f"{p.what} {p.path} cannot be created ({parent} is not "
                            f"writable)")
    return problems


def check_paths_on_nodes(paths: list[NodePath], *, skip_own_node: bool = True,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Raise :class:`PathNotOnNode` (one line) if an alive node of the connected Ray cluster
    cannot see one of ``paths``; a node that does not answer within ``timeout_s`` is
    logged and skipped (its jobs fail on their own if the path is missing there)."""
    if not paths:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    own = _own_node_id() if skip_own_node else None
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("NodeID") != own]
    if not nodes:
        return
    probe = ray.remote(num_cpus=0, max_retries=0)(missing_here)
    refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(paths): n for n in nodes}
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in late:
        log.warning("Ray node %s did not answer the path check within %.0f s; not checked",
                    refs[ref].get("NodeManagerAddress"), timeout_s)
        ray.cancel(ref, force=True)
    for ref in ready:
        try:
            problems = ray.get(ref)
        except Exception as e:  # the node went away meanwhile: its jobs go elsewhere
            log.warning("Ray node %s could not run the path check (%s)",
                        refs[ref].get("NodeManagerAddress"), e.__class__.__name__)
            continue
        if problems:
            node = refs[ref].get("NodeManagerAddress", refs[ref]["NodeID"])
            raise PathNotOnNode(
                f"{problems[0]} on Ray node {node}, though the driver sees it; give a path "
                f"every node mounts at the same place (a shared filesystem) or, for the "
                f"store, a URI such as s3://bucket/prefix")


def _own_node_id() -> str | None:
    """The node this driver runs on; None for a Ray client (``ray://``), whose driver
    sees none of the cluster's filesystems."""
    import ray

    try:
        from ray.util.client import ray as client

        if client.is_connected():
            return None
    except ImportError:  # pragma: no cover - Ray without its client
        pass
    return ray.get_runtime_context().get_node_id()
