"""``raytda serve``: deploy one finished configuration on Ray Serve and keep it up until
Ctrl-C or SIGTERM. The configuration is named with the flags (or --config) of the
``raytda sweep`` that ran it, so the two build the same Sweep and the same keys."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

from raytda.specs import SpecError


def add_serve_parser(subparsers: argparse._SubParsersAction,
                     add_sweep_args: Callable[[argparse.ArgumentParser], None],
                     build_sweep: Callable[[argparse.Namespace], Any]
                     ) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``raytda``'s subparsers.

    ``add_sweep_args`` and ``build_sweep`` are raytda.cli's own (handed in rather than
    imported, so this module does not import raytda.cli back): ``serve`` takes the sweep
    flags and builds the same Sweep from them."""
    from raytda.serving.app import (
        DEFAULT_BATCH_WAIT_MS,
        DEFAULT_MAX_BATCH_SIZE,
        DEFAULT_PORT,
    )

    s = subparsers.add_parser(
        "serve", help="serve top-k proponents/opponents of new inputs over HTTP (Ray Serve) "
                      "from one finished configuration; name it with its sweep's flags")
    add_sweep_args(s)
    s.add_argument("--host", default="127.0.0.1",
                   help="interface Serve's HTTP proxy listens on (default 127.0.0.1; "
                        "0.0.0.0 for every interface)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"HTTP port (default {DEFAULT_PORT})")
    s.add_argument("--replicas", type=int, default=1,
                   help="Serve replicas; each loads the stored train side (default 1)")
    s.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                   help=f"most inputs per scoring call, and per request (default "
                        f"{DEFAULT_MAX_BATCH_SIZE})")
    s.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS,
                   help=f"how long a batch waits to fill (default {DEFAULT_BATCH_WAIT_MS:g})")
    s.add_argument("--cpus-per-replica", type=float, default=1.0,
                   help="CPUs each replica reserves, and its torch threads (default 1)")
    s.set_defaults(fn=partial(cmd_serve, build_sweep=build_sweep))
    return s


def cmd_serve(a: argparse.Namespace, build_sweep: Callable[[argparse.Namespace], Any]) -> int:
    """Deploy, print the URL, block until Ctrl-C / SIGTERM, then take it all down."""
    import time

    from raytda.serving.app import deploy

    sweep = build_sweep(a)
    configs = sweep.spec.evaluations()
    if len(configs) != 1:
        labels = ", ".join(f"{e.method.name} {e.ensemble.label} on {e.task.name}"
                           for e in configs)
        raise SpecError(f"these flags name {len(configs)} configurations ({labels}); serve "
                        f"one: give one --ensemble (no '|' grid), one --method, one --setting")
    ev = configs[0]
    served = deploy(sweep, ev.ensemble, ev.method.name, ev.task.name, host=a.host,
                    port=a.port, replicas=a.replicas, max_batch_size=a.max_batch_size,
                    batch_wait_ms=a.batch_wait_ms, cpus_per_replica=a.cpus_per_replica,
                    address=a.address)
    try:
        print(f"raytda: serving {ev.method.name} {ev.ensemble.label} on {ev.task.name} at "
              f"{served.url} ({a.replicas} replica(s)); Ctrl-C to stop", flush=True)
        while True:  # Ctrl-C and SIGTERM (raytda.cli) arrive as KeyboardInterrupt
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        served.shutdown()
    print("raytda: serve stopped", flush=True)
    return 0
