"""``raytda tune``: adaptive search over ensemble configurations (Ray Tune) from the shell.

It takes every flag of ``raytda sweep`` (declared once, in :func:`raytda.cli.add_sweep_args`)
and reads them the same way (:func:`raytda.cli.build_sweep`), so a search and a sweep given
the same flags share the store (default ``OUT/store``) and every artifact in it. The
``--ensemble`` grid, when given, is the space searched; the search state lives under
``--tune-dir`` so an interrupted search continues with ``--resume``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path


def add_tune_parser(subparsers: argparse._SubParsersAction, add_sweep_args: Callable,
                    build_sweep: Callable) -> argparse.ArgumentParser:
    """Add the ``tune`` subcommand to ``raytda``'s subparsers, with the sweep's flags
    (``add_sweep_args``) read the sweep's way (``build_sweep``): passed in by
    :mod:`raytda.cli`, which this module does not import."""
    t = subparsers.add_parser(
        "tune", help="search ensemble configurations with Ray Tune (LDS vs a cost) on the "
                     "store of `raytda sweep`, never trying one twice; resumable",
        description="Takes the flags of `raytda sweep`; --ensemble grids are the space "
                    "searched (default: naive I=1..5, dropout I=1..5 D=1|3|10, and LoRA "
                    "I=1..5 L=1|3|5 when the task trains adapters). Configurations the "
                    "store holds already are reported, not run.")
    add_sweep_args(t)
    t.add_argument("--num-samples", type=int, default=8,
                   help="trials: configurations to evaluate that the store lacks (default 8)")
    t.add_argument("--tune-dir", help="Tune's storage path, holding the search state "
                                      "(default OUT/tune)")
    t.add_argument("--resume", action="store_true",
                   help="continue the search found in --tune-dir (finished trials kept)")
    t.add_argument("--concurrent", type=int, default=1, help="trials at once (default 1)")
    t.add_argument("--random", action="store_true",
                   help="random search (without replacement), even with optuna installed")
    t.set_defaults(fn=partial(cmd_tune, build_sweep=build_sweep))
    return t


def check_tune_args(a: argparse.Namespace) -> None:
    """Fail before anything is built on counts that cannot make a search."""
    from raytda.specs import SpecError

    if a.num_samples < 1:
        raise SpecError(f"--num-samples must be >= 1 (trials to run), got {a.num_samples}")
    if a.concurrent < 1:
        raise SpecError(f"--concurrent must be >= 1 (trials at once), got {a.concurrent}")
    if a.no_lds:
        raise SpecError("raytda tune maximizes LDS and needs its ground truth; drop --no-lds")


def _grid_given(a: argparse.Namespace) -> bool:
    from raytda.sweep_config import load_config

    return bool(a.ensemble) or bool(a.config and load_config(a.config).get("ensembles"))


def cmd_tune(a: argparse.Namespace, build_sweep: Callable) -> int:
    """Run (or resume) the search; print one row per configuration with its Pareto flag."""
    check_tune_args(a)
    try:
        return _run_tune(a, build_sweep)
    except KeyboardInterrupt as e:
        from raytda.tune.search import RESUME_HINT

        # Ctrl-C (or SIGTERM, its subclass in raytda.cli) anywhere in the search: the same
        # class, now saying how to continue; raytda.cli prints it as its one line.
        raise (e if e.args else type(e)(RESUME_HINT)) from None


def _run_tune(a: argparse.Namespace, build_sweep: Callable) -> int:
    import time

    import pandas as pd

    from raytda.tune.search import (
        DEFAULT_GRIDS,
        LORA_GRID,
        can_train_adapters,
        tune_sweep,
        write_tune,
    )

    t0 = time.perf_counter()
    sweep = build_sweep(a, default_ensembles=DEFAULT_GRIDS)
    tasks = sweep.spec.tasks
    if not _grid_given(a) and len(tasks) == 1 and can_train_adapters(tasks[0]):
        from raytda.ensembles.spec import expand_grid

        sweep.spec = sweep.spec.replace(
            ensembles=(*sweep.spec.ensembles, *expand_grid(LORA_GRID)))
    out = Path(a.out)
    df = tune_sweep(sweep, cost=a.cost, num_samples=a.num_samples,
                    sampler="random" if a.random else "auto",
                    max_concurrent_trials=a.concurrent,
                    storage_path=a.tune_dir or str(out / "tune"), resume=a.resume,
                    progress=not a.quiet)
    path, plots = write_tune(df, out)
    cols = ["label", "lds", "lds_se", "train_time_s", "serve_time_s", "params",
            "peak_mem_bytes", "source", "trial", "jobs_run", "pareto"]
    with pd.option_context("display.width", 160, "display.max_rows", 500,
                           "display.float_format", "{:.4g}".format):
        print(df[[c for c in cols if c in df]].to_string(index=False))
    n_trials = int((df["source"] == "trial").sum()) if len(df) else 0
    print(f"\n{n_trials} trial(s) and {len(df) - n_trials} stored configuration(s) in "
          f"{time.perf_counter() - t0:.1f} s; results: {path}"
          + (f"; plots: {', '.join(str(p) for p in plots)}" if plots else ""))
    return 0
