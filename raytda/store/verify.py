"""``raytda store verify``: read every artifact of a store and name what is wrong.

Findings, one per line: a record or payload that fails its checksum (``corrupt``), a
payload shorter or longer than its record says (``truncated``), a record without payload,
a payload without record, or a part (score chunk, block part) whose owning job's artifact
or record is gone or broken (``orphaned``), an input a record names that is not in the
store (``missing``: nothing to remove), an artifact made from a broken or missing one
(``stale``: a sweep would recompute it anyway), a temp file whose writer died
(``stale temp``) and a lease whose holder died (``stale lease``). ``repair`` removes
them; the next sweep rebuilds whatever it needs of what was removed. Files a live sweep
is writing are left alone: temp files of live writers are never findings, and ``repair``
refuses while a sweep holds leases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raytda.store.artifacts import TEMP_MARK, ArtifactStore
from raytda.store.lease import lease_expired, read_lease, refuse_while_running


@dataclass(frozen=True)
class Finding:
    """One thing wrong in a store: ``what`` kind of problem, at ``path``, and why.
    ``key`` is set when the whole artifact (payload and record) has to go."""

    what: str
    path: str
    detail: str
    key: str | None = None

    def line(self, root: str) -> str:
        rel = self.path[len(root) + 1:] if self.path.startswith(root + "/") else self.path
        return f"{self.what}: {rel} ({self.detail})"


def _artifact_files(store: ArtifactStore) -> tuple[set[str], set[str], list[Any]]:
    """(keys with a record, keys with a payload, other files) under the store's kinds."""
    records, payloads, other = set(), set(), []
    for info in store.files():
        name = info.base_name
        if TEMP_MARK not in name and name.endswith(".json"):
            records.add(name[:-5])
        elif TEMP_MARK not in name and name.endswith(".st"):
            payloads.add(name[:-3])
        else:
            other.append(info)
    return records, payloads, other


def looks_like_store(store: ArtifactStore) -> bool:
    """Whether the store's root holds at least one artifact file where a store keeps it
    (``KIND/KIND-...`` with a record, payload or lease suffix, or their temp files), so
    that verify and gc never read an unrelated directory as an empty, intact store."""
    for info in store.files():
        rel = info.path[len(store.root) + 1:] if info.path.startswith(store.root + "/") \
            else info.path
        parts = rel.split("/")
        name = parts[-1].split(TEMP_MARK)[0]
        if (len(parts) == 2 and parts[1].startswith(parts[0] + "-")
                and name.endswith((".json", ".st", ".lease"))):
            return True
    return False


def _listed_parts(rec: dict[str, Any]) -> list[str]:
    """Keys of the parts a record's metadata lists (an evaluation's score chunks): the
    artifact is incomplete without them."""
    meta = rec.get("meta")
    chunks = meta.get("score_chunks") if isinstance(meta, dict) else None
    return [c["key"] for c in chunks or () if isinstance(c, dict) and "key" in c]


def verify_store(store: ArtifactStore, progress: bool = False) -> list[Finding]:
    """Everything wrong in ``store``; reads every payload in full."""
    import sys
    import time

    from tqdm.auto import tqdm

    # A bar is for a person watching: piped or redirected, it would only fill the log.
    progress = progress and sys.stderr.isatty()
    records, payloads, other = _artifact_files(store)
    found: list[Finding] = []
    readable: dict[str, dict[str, Any]] = {}  # records that pass their own checksum
    for key in tqdm(sorted(records), desc="verifying", unit="artifact", disable=not progress):
        st_path, js_path = store.paths(key)
        rec, why = store.read_record(key)
        if rec is None:
            found.append(Finding("corrupt", js_path, why or "record unreadable", key))
            continue
        readable[key] = rec
        if key not in payloads:
            found.append(Finding("orphaned", js_path, "record without payload", key))
            continue
        why = store.payload_problem(key, rec)
        if why is not None:
            kind = "truncated" if why.startswith("payload truncated") else "corrupt"
            found.append(Finding(kind, st_path, why, key))
    # A payload without its record goes with repair, so what was made from it or owned by
    # it is broken too: it is named before the dependencies are followed, so one pass
    # finds everything that a repair would leave behind.
    for key in sorted(payloads - records):
        found.append(Finding("orphaned", store.paths(key)[0], "payload without record", key))
    needed_by: dict[str, str] = {}
    for key, rec in sorted(readable.items()):
        for dep in (*(rec.get("inputs") or ()), *_listed_parts(rec)):
            if dep not in records and dep not in payloads:
                needed_by.setdefault(dep, key)
    for dep, key in sorted(needed_by.items()):
        found.append(Finding("missing", store.paths(dep)[1], f"input of {key}"))
    # What was made from something broken or missing, parts of a job whose artifact is,
    # and a job one of whose parts is: a sweep would recompute them anyway, so they are
    # named and removed with it. Followed to a fixed point, so that a second verify after
    # --repair finds nothing new.
    broken = {**{f.key: f.what for f in found if f.key}, **dict.fromkeys(needed_by, "missing")}
    parts_of: dict[str, list[str]] = {}
    for key, rec in readable.items():
        if rec.get("owner") is not None:
            parts_of.setdefault(rec["owner"], []).append(key)
    for key, rec in readable.items():
        parts_of.setdefault(key, []).extend(_listed_parts(rec))
    changed = True
    while changed:
        changed = False
        for key, rec in sorted(readable.items()):
            if key in broken:
                continue
            owner, js_path = rec.get("owner"), store.paths(key)[1]
            bad = next((d for d in rec.get("inputs") or () if d in broken), None)
            bad_part = next((p for p in sorted(parts_of.get(key, ())) if p in broken), None)
            if owner is not None and (owner in broken or owner not in readable):
                found.append(Finding("orphaned", js_path, f"part of {owner}, which is "
                                     f"{broken.get(owner, 'gone')}", key))
                broken[key] = "orphaned"
            elif bad is not None:
                found.append(Finding("stale", js_path, f"made from {bad}, which is "
                                     f"{broken[bad]}", key))
                broken[key] = "stale"
            elif bad_part is not None:
                found.append(Finding("stale", js_path, f"its part {bad_part} is "
                                     f"{broken[bad_part]}", key))
                broken[key] = "stale"
            else:
                continue
            changed = True
    now = time.time()
    stale_temp = set(store.stale_temp_files(now))
    for info in sorted(other, key=lambda i: i.path):
        if info.path in stale_temp:
            found.append(Finding("stale temp", info.path, f"{info.size} bytes, writer gone"))
        elif info.base_name.endswith(".lease"):
            held = read_lease(store, info.base_name[:-6])
            if held is not None and lease_expired(held, now):
                found.append(Finding("stale lease", info.path, f"holder pid {held['pid']} "
                                                               "is gone"))
    return found


def repair_store(store: ArtifactStore, found: list[Finding]) -> None:
    """Remove what ``found`` names. Refuses while a live sweep holds leases: what it is
    writing can look orphaned until it finishes."""
    refuse_while_running(store, "--repair")
    for f in found:
        if f.key is not None:
            store.delete(f.key)
        else:
            store._discard(f.path)


def run_verify(store: ArtifactStore, repair: bool = False, progress: bool = True) -> int:
    """The command: print one line per finding; exit status 1 if something is wrong
    (0 once ``repair`` removed it all)."""
    found = verify_store(store, progress)
    for f in found:
        print(f.line(store.root))
    n = len(store.keys())
    if not found:
        print(f"store {store.uri}: {n} artifact(s), all intact")
        return 0
    if repair:
        repair_store(store, found)
        print(f"removed {len(found)} broken or stale item(s); the next sweep rebuilds what "
              f"it needs of them")
        return 0
    print(f"store {store.uri}: {len(found)} problem(s); `raytda store verify --repair` "
          f"removes them")
    return 1
