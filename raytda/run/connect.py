"""Reaching a Ray cluster: a quick reachability probe and token authentication."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """Raise a one-line ``ConnectionError`` unless ``address`` accepts TCP connections.

    ``ray.init`` retries an unreachable GCS for a long time; a plain socket tells in
    milliseconds (refused) or ``timeout_s`` (filtered) whether anything listens there.
    """
    if address in ("auto", "local"):
        return
    if address.startswith(("http://", "https://")):
        raise ConnectionError(
            f"{address} looks like a dashboard URL (used by `ray job submit`); --address "
            "needs the cluster's GCS address host:6379 or a Ray client address ray://host:10001")
    hp = _host_port(address)
    if hp is None:
        raise ConnectionError(f"cannot parse Ray address {address!r}; use host:port (GCS, "
                              "usually port 6379), ray://host:10001 or 'auto'")
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as e:
        why = e.strerror or e.__class__.__name__
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address} ({why}); start one with "
            "`ray start --head` or fix --address / RAY_ADDRESS") from None


def _enable_token_auth_if_token_given() -> None:
    """Turn on Ray token auth when the user handed us a token explicitly.

    Ray enables token auth on its own only for clusters it starts or finds locally; for an
    explicit address it waits for RAY_AUTH_MODE=token. A RAY_AUTH_TOKEN or
    RAY_AUTH_TOKEN_PATH in the environment is a deliberate choice of credentials for the
    cluster we are about to join, so we honor it instead of failing after a 20 s timeout.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config at import; refresh it the way Ray itself does
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # pragma: no cover - private API moved; env var still reaches children
        log.debug("could not refresh Ray's cached config", exc_info=True)


# --------------------------------------------------------------------------- worker side


@contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Keep the caller's own SIGTERM handler across ``ray.init``, which replaces it with
    ``sys.exit`` (the raytda CLI stops on SIGTERM as on Ctrl-C: one line, actors killed).
    A process without one keeps Ray's, which at least runs Ray's exit hooks."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


def join_ray(address: str | None, init_kwargs: dict[str, Any], runtime_env: dict[str, Any] | None
             ) -> bool:
    """Join the cluster at ``address`` (or RAY_ADDRESS, or a local one, started with
    ``init_kwargs``); False when this process was connected already. A refused or
    unauthenticated connection is one ``ConnectionError`` line with the fix."""
    _enable_token_auth_if_token_given()
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Worker output reaches the driver (and so `ray job logs`); failures are also
    # logged here with the worker's traceback.
    kw: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if runtime_env:
        kw["runtime_env"] = runtime_env
    if address is None and init_kwargs:
        address = "local"  # resource arguments are only valid for a new cluster
    if address in (None, "local"):
        kw.update({"include_dashboard": False} | init_kwargs)
    try:
        with _keep_sigterm_handler():
            ray.init(address=address, **kw)
    except ConnectionError as e:
        hint = ("; if the cluster uses token authentication, export RAY_AUTH_MODE=token "
                "and RAY_AUTH_TOKEN=<token> (from `ray get-auth-token` on the head node)"
                if os.environ.get("RAY_AUTH_MODE") != "token" else
                "; check that RAY_AUTH_TOKEN / ~/.ray/auth_token holds the cluster's token")
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ConnectionError(f"{first}{hint}") from None
    except Exception as e:
        if e.__class__.__name__ == "AuthenticationError":
            raise ConnectionError(str(e).splitlines()[0]) from None
        raise
    return True
