"""``raytda store gc``: remove the artifacts that no result references.

Every record names what it was made from (``inputs``) or the job it is a part of
(``owner``), so the artifacts a result needs are found by following ``inputs`` from every
``result-*`` record and taking along the parts each reached job owns (score chunks, block
parts). Everything else with a record goes. Records that fail their checksum are not
followed and not removed here: ``raytda store verify --repair`` deals with them.
"""

from __future__ import annotations

from typing import Any

from raytda.store.artifacts import ArtifactStore
from raytda.store.lease import refuse_while_running


def referenced(records: dict[str, dict[str, Any]]) -> set[str]:
    """Keys reachable from the results through inputs and ownership."""
    owned: dict[str, list[str]] = {}
    for key, rec in records.items():
        if rec.get("owner"):
            owned.setdefault(rec["owner"], []).append(key)
    seen: set[str] = set()
    stack = [k for k in records if k.startswith("result-")]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend((records.get(key) or {}).get("inputs") or ())
        stack.extend(owned.get(key, ()))
    return seen


def unreferenced(store: ArtifactStore) -> tuple[list[str], int]:
    """(keys no result references, number of records skipped as corrupt)."""
    records: dict[str, dict[str, Any]] = {}
    corrupt = 0
    for key in store.keys():
        rec, why = store.read_record(key)
        if rec is None:
            corrupt += why is not None
            continue
        records[key] = rec
    keep = referenced(records)
    return sorted(k for k in records if k not in keep), corrupt


def run_gc(store: ArtifactStore, dry_run: bool = False) -> int:
    """The command: remove (or, ``dry_run``, list) unreferenced artifacts, one per line."""
    refuse_while_running(store, "gc")
    drop, corrupt = unreferenced(store)
    freed = 0
    for key in drop:
        rec = store.record(key) or {}
        freed += int(rec.get("bytes", 0))
        print(f"{'would remove' if dry_run else 'removed'}: {key}")
        if not dry_run:
            store.delete(key)
    verb = "would free" if dry_run else "freed"
    print(f"{len(drop)} unreferenced artifact(s), {verb} {freed / 2**20:.1f} MiB")
    if corrupt:
        print(f"{corrupt} record(s) fail their checksum and were left; "
              f"`raytda store verify --repair` removes them")
    return 0
