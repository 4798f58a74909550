"""``raytda tune``: adaptive search over ensemble configurations (Ray Tune) from the shell.

Trials share the artifact store with ``raytda sweep``; the search state lives under
``--tune-dir`` so an interrupted search continues with ``--resume``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_tune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tune`` subcommand to ``raytda``'s subparsers."""
    t = subparsers.add_parser(
        "tune", help="search ensemble configurations with Ray Tune (LDS vs a cost), sharing "
                     "the store with `raytda sweep`; resumable")
    t.add_argument("--setting", default="digits-mlp", help="registered setting (digits-mlp)")
    t.add_argument("--method", default="trak", help="attribution method (trak)")
    t.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    t.add_argument("--cost", default="train_time_s",
                   help="cost column to minimize (train_time_s, serve_time_s, params, "
                        "peak_mem_bytes)")
    t.add_argument("--out", default="raytda-tune-out", help="output directory (tune.parquet)")
    t.add_argument("--store", help="artifact store (default OUT/store)")
    t.add_argument("--tune-dir", help="Tune's storage path, holding the search state "
                                      "(default OUT/tune)")
    t.add_argument("--resume", action="store_true",
                   help="continue the search found in --tune-dir (finished trials kept)")
    t.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="how a trial runs its jobs: inside the trial (local) or on actors")
    t.add_argument("--concurrent", type=int, default=1, help="trials at once (default 1)")
    t.add_argument("--address", help="Ray cluster address to join")
    t.add_argument("--data-dir", help="directory with the setting's data files")
    t.add_argument("--proj-dim", type=int, help="TRAK projection dimension (default 2048)")
    t.add_argument("--lds-m", type=int, default=None, help="number of LDS subsets (default 50)")
    t.add_argument("--seed", type=int, default=0, help="base seed of the ensemble models")
    t.add_argument("--random", action="store_true",
                   help="random search over the conditional space, even with optuna installed")
    t.set_defaults(fn=cmd_tune)
    return t


def check_tune_args(a: argparse.Namespace) -> None:
    """Fail before Ray starts on counts and axes that cannot make a search."""
    from raytda.results import check_cost
    from raytda.specs import SpecError
    from raytda.store.uri import check_store_uri

    if a.num_samples < 1:
        raise SpecError(f"--num-samples must be >= 1 (trials to run), got {a.num_samples}")
    if a.concurrent < 1:
        raise SpecError(f"--concurrent must be >= 1 (trials at once), got {a.concurrent}")
    check_cost(a.cost)
    if a.store:
        check_store_uri(a.store)


def cmd_tune(a: argparse.Namespace) -> int:
    """Run (or resume) the search; print one row per trial with its Pareto flag."""
    import pandas as pd

    from raytda.methods import as_method
    from raytda.run.tune import tune_ensembles
    from raytda.specs import LDSSpec

    check_tune_args(a)
    out = Path(a.out)
    lds = LDSSpec(m=a.lds_m) if a.lds_m is not None else LDSSpec()
    df = tune_ensembles(a.setting, a.store or str(out / "store"),
                        method=as_method(a.method, a.proj_dim), lds=lds, cost=a.cost,
                        num_samples=a.num_samples, search_alg=None if a.random else "auto",
                        max_concurrent_trials=a.concurrent, executor=a.executor,
                        base_seed=a.seed, address=a.address,
                        storage_path=a.tune_dir or str(out / "tune"), resume=a.resume,
                        data_dir=a.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = df.drop(columns=["config"]) if "config" in df else df
    table.to_parquet(out / "tune.parquet", index=False)
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        print(table.sort_values("lds", ascending=False).to_string(index=False))
    print(f"\n{len(df)} trials; results: {out / 'tune.parquet'}")
    return 0
