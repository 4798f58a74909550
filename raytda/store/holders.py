"""Who is writing: the identity of a writing process, and whether it is still alive.

Temp files and leases carry their writer's host and pid. On the writer's own host a dead
pid settles it at once (``kill -9`` leaves nothing running to renew anything); from
another host only time can tell, so those callers also compare an age or an expiry.
"""

from __future__ import annotations

import hashlib
import os
import platform


def host_tag() -> str:
    """A short, filename-safe tag of this host (hostnames may hold dots and dashes)."""
    return hashlib.sha256(platform.node().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder_dead(host: str, pid: int) -> bool:
    """True only when it is certain: the holder ran on this host and its pid is gone."""
    return host == host_tag() and not pid_alive(pid)
