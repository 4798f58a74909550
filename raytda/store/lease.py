"""Leases: of several sweeps on one store, one computes an artifact and the others take
other work, or wait for it when they have none.

A lease is a small JSON file next to the artifact, ``<kind>/<key>.lease``, naming its
holder (host tag, pid, a random token) and an expiry time. The holder renews the expiry
every third of :data:`LEASE_TTL_S` from a background thread while its job runs, and
removes the file when the job ends, however it ends. A lease is expired when its holder
is provably dead (same host, pid gone) or its expiry has passed (a holder on another host
that stopped renewing); an expired lease is taken over.

Sharing the work. Executors claim without waiting (:func:`try_claim`): a job whose lease a
live sweep holds is put aside and the next ready job is tried, so two sweeps on one store
split its independent jobs between them; a sweep waits (polling) only when every job it
could run is held by another, and takes a held job over once its holder dies or stops
renewing. :func:`claim` is the waiting form, for a caller with nothing else to do.

Guarantees. On a local or POSIX network filesystem the lease is created with ``link``,
which fails when the file exists, so of two sweeps exactly one holds it; a takeover
renames the expired file away first, and only the sweep whose rename succeeded creates
the new one. On object stores (``s3://``, ``gs://``) there is no create-if-absent: the
lease is written, then read back, so two sweeps starting within one round trip may both
compute an artifact. Either way results stay correct, since every artifact is written
atomically under a content key; the lease only saves the duplicate work. Expiry across
hosts relies on their clocks agreeing to well within the TTL.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from raytda.store.artifacts import ArtifactStore, temp_name
from raytda.store.holders import holder_dead, host_tag

log = logging.getLogger(__name__)

LEASE_TTL_S = 30.0
POLL_S = 0.25
_HELD: set[str] = set()  # tokens of the leases this process holds now


def read_lease(store: ArtifactStore, key: str) -> dict[str, Any] | None:
    """The lease on ``key`` (holder and expiry), or None if there is none."""
    blob = store._read(store.lease_path(key))
    if blob is None:
        return None
    try:
        info = json.loads(blob)
    except ValueError:
        info = None
    if not isinstance(info, dict) or not {"host", "pid", "token", "expires"} <= set(info):
        return {"host": "", "pid": 0, "token": "", "expires": 0.0}  # unreadable: expired
    return info


def lease_expired(info: dict[str, Any], now: float | None = None) -> bool:
    """Whether a lease's holder is gone: dead on this host, or no longer renewing."""
    now = time.time() if now is None else now
    if info["host"] == host_tag() and info["pid"] == os.getpid() \
            and info["token"] not in _HELD:
        return True  # names this very process, which does not hold it
    return holder_dead(info["host"], int(info["pid"])) or now > float(info["expires"])


def _blob(token: str, ttl: float) -> bytes:
    import platform

    return json.dumps({"host": host_tag(), "node": platform.node(), "pid": os.getpid(),
                       "token": token, "expires": time.time() + ttl}).encode()


def _create(store: ArtifactStore, path: str, blob: bytes, token: str) -> bool:
    """Create the lease file only if there is none; True if this call created it."""
    if store.local:
        tmp = temp_name(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(blob)
        try:
            os.link(tmp, path)  # fails if it exists: the one atomic create-if-absent
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    import pyarrow.fs as pafs

    if store.fs.get_file_info(path).type != pafs.FileType.NotFound:
        return False
    store._write_atomic(path, blob)
    got = store._read(path)
    return got is not None and json.loads(got).get("token") == token


def _remove_expired(store: ArtifactStore, path: str, seen: dict[str, Any]) -> None:
    """Take away an expired lease, but only the one judged expired: if another sweep
    took it over meanwhile, its fresh lease is put back."""
    if not store.local:
        store._discard(path)
        return
    grave = temp_name(path)
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return  # another sweep removed it first
    try:
        with open(grave, "rb") as f:
            moved = json.loads(f.read())
    except ValueError:
        moved = {}
    if moved.get("token") != seen["token"]:
        try:
            os.link(grave, path)
        except FileExistsError:
            pass
    os.unlink(grave)


class Lease:
    """A held lease: renewed in the background until :meth:`release`."""

    def __init__(self, store: ArtifactStore, key: str, token: str, ttl: float) -> None:
        self.store, self.key, self.token, self.ttl = store, key, token, ttl
        self._stop = threading.Event()
        _HELD.add(token)
        self._thread = threading.Thread(target=self._renew, name=f"lease {key}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        path = self.store.lease_path(self.key)
        while not self._stop.wait(self.ttl / 3):
            now = read_lease(self.store, self.key)
            if now is None or now["token"] != self.token:
                log.warning("lease on %s was taken over (this sweep stalled past its expiry); "
                            "both sweeps compute it, and either result is the same", self.key)
                return
            try:
                self.store._write_atomic(path, _blob(self.token, self.ttl))
            except Exception:  # a missed renewal only risks a duplicate computation
                log.debug("could not renew lease on %s", self.key, exc_info=True)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        _HELD.discard(self.token)
        now = read_lease(self.store, self.key)
        if now is not None and now["token"] == self.token:
            self.store._discard(self.store.lease_path(self.key))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_acquire(store: ArtifactStore, key: str, ttl: float = LEASE_TTL_S) -> Lease | None:
    """The lease on ``key`` if nobody live holds it (an expired one is taken over)."""
    path = store.lease_path(key)
    token = uuid.uuid4().hex
    if _create(store, path, _blob(token, ttl), token):
        return Lease(store, key, token, ttl)
    held = read_lease(store, key)
    if held is not None and not lease_expired(held):
        return None
    if held is not None:
        log.info("taking over the expired lease on %s (holder pid %s)", key, held["pid"])
        _remove_expired(store, path, held)
    if _create(store, path, _blob(token, ttl), token):
        return Lease(store, key, token, ttl)
    return None


#: :func:`try_claim`'s answers when it holds no lease: the artifact is there (``BUILT``),
#: or a live sweep holds its lease (``HELD``)
BUILT = "built"
HELD = "held"


def try_claim(store: ArtifactStore, key: str, ready: Callable[[], bool],
              ttl: float = LEASE_TTL_S) -> Lease | str:
    """A lease to compute ``key`` now, without waiting: :data:`BUILT` if ``ready()``
    says the artifact is there, :data:`HELD` if a live sweep holds its lease (an expired
    lease is taken over, as in :func:`try_acquire`)."""
    if ready():
        return BUILT
    lease = try_acquire(store, key, ttl)
    if lease is None:
        # The holder may have finished between our two looks.
        return BUILT if ready() else HELD
    if ready():  # finished between our check and our lease
        lease.release()
        return BUILT
    return lease


def claim(store: ArtifactStore, key: str, ready: Callable[[], bool],
          ttl: float = LEASE_TTL_S, poll_s: float = POLL_S) -> Lease | None:
    """A lease to compute ``key``, or None once ``ready()`` says the artifact is there
    (built by another sweep while this one waited for its lease)."""
    waited = False
    while True:
        got = try_claim(store, key, ready, ttl)
        if isinstance(got, Lease):
            return got
        if got == BUILT:
            return None
        if not waited:
            held = read_lease(store, key) or {}
            log.info("waiting for %s: another sweep (%s, pid %s) is computing it", key,
                     held.get("node", "?"), held.get("pid", "?"))
            waited = True
        time.sleep(poll_s)


def held_elsewhere(store: ArtifactStore, key: str) -> bool:
    """Whether a live holder other than this process's own leases has ``key``'s lease
    (a look, not a claim: it may change the moment after)."""
    held = read_lease(store, key)
    return held is not None and held["token"] not in _HELD and not lease_expired(held)


def live_leases(store: ArtifactStore) -> list[tuple[str, dict[str, Any]]]:
    """(key, holder) of every lease in the store that a live sweep holds."""
    out = []
    for info in store.files():
        if info.base_name.endswith(".lease"):
            key = info.base_name[:-6]
            held = read_lease(store, key)
            if held is not None and not lease_expired(held):
                out.append((key, held))
    return out


def refuse_while_running(store: ArtifactStore, what: str) -> None:
    """Raise StoreError if a live sweep holds leases on ``store``: what it is writing can
    look orphaned or unreferenced until it finishes. ``what``: the command, for the line."""
    from raytda.store.artifacts import StoreError

    busy = live_leases(store)
    if busy:
        key, held = busy[0]
        raise StoreError(f"a sweep is running on store {store.uri!r} ({len(busy)} live "
                         f"lease(s), e.g. {key} held by pid {held['pid']} on "
                         f"{held.get('node', '?')}); run {what} when it has finished")
