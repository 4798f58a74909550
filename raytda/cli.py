"""``raytda`` command line: sweep, plan, report, scores, store, tune, list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from raytda.defaults import DEFAULT_ENSEMBLE_GRIDS, DEFAULT_METHODS, DEFAULT_SETTINGS
from raytda.ensembles import ENSEMBLES, Ensemble
from raytda.ensembles.spec import expand_grid
from raytda.features.choice import FEATURES_RULE
from raytda.methods import METHODS
from raytda.methods.k_rule import PROJ_DIM_RULE
from raytda.run.executors import DEFAULT_EXECUTOR, EXECUTORS, default_executor
from raytda.run.logs import LEVELS as LOG_LEVELS
from raytda.specs import LDSSpec, SpecError
from raytda.sweep_config import CONFIG_KEYS, load_config


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"JSON or YAML sweep file (keys: {', '.join(sorted(CONFIG_KEYS))})")
    p.add_argument("--setting", action="append", help="a task by its registered name: a built-in "
                   "one or one registered with raytda.register_task (`raytda list` shows the built-in "
                   f"ones; repeatable); default {' '.join(DEFAULT_SETTINGS)}")
    p.add_argument("--task", action="append",
                   help="your own Task: 'module:Class' or 'path/to/file.py:Class' (repeatable)")
    p.add_argument("--no-lds", action="store_true",
                   help="attribution only: scores and costs, no LDS ground truth")
    p.add_argument("--method", action="append",
                   help=f"{', '.join(sorted(METHODS))} or a registered one (repeatable)")
    p.add_argument("--ensemble", action="append",
                   help="grid like 'naive:I=1|3|5' or 'dropout:I=1|3,D=10|25' (repeatable); "
                        f"kinds: {', '.join(sorted(ENSEMBLES))}; "
                        f"default {' '.join(DEFAULT_ENSEMBLE_GRIDS)}")
    p.add_argument("--configuration", action="append", metavar="METHOD@ENSEMBLE",
                   help="run exactly these (method, ensemble) pairs instead of the --method x "
                        "--ensemble grid, e.g. 'trak@dropout-forward:I=1,D=10' or "
                        "'if@naive:I=1|3' (repeatable; the ensemble part is a grid)")
    p.add_argument("--features", metavar="NAME[:OPT=VALUE,...]",
                   help="gradient features for every method: dense (exact per-sample "
                        "gradients, projected densely), sketch (TensorSketch from hooks), "
                        "factorized (per-layer Kronecker projections from hooks; e.g. "
                        "factorized:uncovered=skip) or another registered part; default (or "
                        "'auto'): what the setting declares (the paper's settings: dense), "
                        f"else dense up to {FEATURES_RULE.max_dense_params:,} parameters "
                        "(measured: where dense's "
                        "projection stops fitting memory and its cost jumps) and sketch "
                        "above (`raytda list` says which, per setting)")
    p.add_argument("--out", default="raytda-out", help="output directory (results, plots)")
    p.add_argument("--store", help="artifact store path or URI (default OUT/store)")
    p.add_argument("--data-dir", help="directory with the setting's data files")
    p.add_argument("--proj-dim", type=int,
                   help="projection dimension k (TRAK's, and any projected features'); "
                        "default: what the setting declares (the paper's settings: 2048, as "
                        f"the paper states), else {PROJ_DIM_RULE.describe()} for n train "
                        "rows, with TRAK's ridge chosen beside it (`raytda list` shows each "
                        "setting's; the results' k and ridge_scale columns say which were "
                        "used)")
    p.add_argument("--lds-m", type=int, default=None, help="number of LDS subsets (default 50)")
    p.add_argument("--lds-alpha", type=float, default=None, help="LDS subset fraction (0.5)")
    p.add_argument("--lds-replicates", type=int, default=None,
                   help="models per LDS subset (>= 2 also reports the noise ceiling)")
    p.add_argument("--n-train", type=int, help="override the setting's train size")
    p.add_argument("--n-test", type=int, help="override the setting's test size")
    p.add_argument("--epochs", type=int, help="override the setting's training epochs")
    p.add_argument("--seed", type=int, default=None, help="base seed of the ensemble models")
    p.add_argument("--executor", choices=sorted(EXECUTORS), default=None,
                   help="; ".join(f"{k.name}: {k.summary}" for k in EXECUTORS.values())
                   + f" (default {DEFAULT_EXECUTOR})")
    p.add_argument("--address", help="Ray cluster address to join (implies --executor ray)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (CUDA when this machine has it, default), cpu, "
                        "cuda, cuda:N; with --address, cuda asks the cluster for GPUs")
    p.add_argument("--cost", default="train_time_s",
                   help="cost axis for the Pareto flag (train_time_s, serve_time_s, params, "
                        "peak_mem_bytes)")
    p.add_argument("--memory-budget", default=None, metavar="SIZE",
                   help="memory the caches of one node may hold, e.g. 8GiB (the default) or "
                        "512MiB; Ray divides it among a node's actors")
    p.add_argument("--train-pack", default=None, metavar="N|auto",
                   help="training jobs (LDS models, naive members, LoRA adapters on one "
                        "base) trained together as one stacked pack on one worker, each "
                        "still its own artifact: auto (the default) packs 5 or more, as "
                        "many as half the memory budget holds; 1 trains every model alone. "
                        "Bit-identical either way: a model whose stacked arithmetic differs "
                        "from training alone (checked on its first batch) trains alone")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cfg_list(cfg: dict[str, Any], key: str, default: list) -> list:
    if key not in cfg:
        return default
    v = cfg[key]
    return [] if v is None else [v] if isinstance(v, (str, dict)) else list(v)


def build_sweep(a: argparse.Namespace,
                default_ensembles: tuple[str, ...] = DEFAULT_ENSEMBLE_GRIDS):
    """The Sweep that the flags of :func:`add_sweep_args` describe (``raytda sweep``,
    ``plan`` and ``tune``); ``default_ensembles`` is the grid when none is given."""
    from raytda.api import Sweep
    from raytda.core.args import ComputeArgs, parse_size
    from raytda.results import check_cost
    from raytda.run.device import resolve_device

    check_cost(a.cost)
    budget = {} if a.memory_budget is None else {
        "memory_budget_bytes": parse_size(a.memory_budget, "--memory-budget")}
    if a.train_pack is not None:
        budget["train_pack"] = parse_train_pack(a.train_pack)
    cfg = load_config(a.config) if a.config else {}
    overrides = dict(cfg.get("overrides") or {})
    for flag, name in (("n_train", "n_train"), ("n_test", "n_test"), ("epochs", "epochs")):
        if getattr(a, flag) is not None:
            overrides[name] = getattr(a, flag)
    # A key given as an empty list in the config is an error, not a request for defaults.
    ens_texts = a.ensemble or _cfg_list(cfg, "ensembles", list(default_ensembles))
    ensembles: list[Ensemble] = []
    for e in ens_texts:
        if isinstance(e, dict):
            ensembles.append(Ensemble.from_dict(e))
        else:
            ensembles.extend(expand_grid(str(e)))
    if not ensembles:
        raise SpecError("the ensemble grid is empty; give at least one --ensemble")
    lds_kw = dict(cfg.get("lds") or {})
    for flag, name in (("lds_m", "m"), ("lds_alpha", "alpha"), ("lds_replicates",
                                                                 "models_per_subset")):
        if getattr(a, flag) is not None:
            lds_kw[name] = getattr(a, flag)
    executor = a.executor or default_executor(a.address)
    from raytda.store.uri import absolute_location, check_store_uri

    # Absolute before anything is sent: Ray workers, Serve replicas and Tune trials each
    # run in a working directory of their own (URIs stay as they are).
    store = absolute_location(a.store or cfg.get("store") or str(Path(a.out) / "store"))
    data_dir = a.data_dir or cfg.get("data_dir")
    check_store_uri(store)
    tasks: list = [load_task(t) for t in (a.task or [])]
    if a.setting or not tasks:
        tasks += a.setting or _cfg_list(cfg, "settings", list(DEFAULT_SETTINGS))
    features = a.features or cfg.get("features")

    def method(m: Any) -> Any:  # the features part applies to every method named here
        if features is None:
            return m
        return {**m, "features": features} if isinstance(m, dict) else {"name": m,
                                                                         "features": features}

    pair_texts = a.configuration or _cfg_list(cfg, "configurations", [])
    grid: dict[str, Any] = {}
    if pair_texts:
        if a.method or a.ensemble or "methods" in cfg or "ensembles" in cfg:
            raise SpecError("give --configuration pairs or the --method x --ensemble grid, "
                            "not both")
        grid["configurations"] = [(method(m), e) for text in pair_texts
                                  for m, e in parse_pairs(text)]
    else:
        grid["methods"] = [method(m) for m in
                           a.method or _cfg_list(cfg, "methods", list(DEFAULT_METHODS))]
        grid["ensembles"] = ensembles
    return Sweep(
        tasks,
        **grid,
        lds=None if a.no_lds else LDSSpec.from_dict(lds_kw),
        store=store,
        data_dir=None if data_dir is None else absolute_location(data_dir),
        base_seed=a.seed if a.seed is not None else int(cfg.get("base_seed") or 0),
        proj_dim=a.proj_dim if a.proj_dim is not None else cfg.get("proj_dim"),
        executor=executor,
        address=a.address,
        compute=ComputeArgs(device=resolve_device(a.device, on_cluster=bool(a.address)),
                            **budget),
        progress=not a.quiet,
        **overrides,
    )


def parse_train_pack(text: str) -> int | str:
    """``--train-pack``: ``auto`` or a whole number >= 1."""
    from raytda.core.args import TRAIN_PACK_AUTO

    text = str(text).strip().lower()
    if text == TRAIN_PACK_AUTO:
        return TRAIN_PACK_AUTO
    if not text.isdigit() or int(text) < 1:
        raise SpecError(f"--train-pack {text!r} must be 'auto' or a whole number >= 1")
    return int(text)


def parse_pairs(text: Any) -> list[tuple[str, Ensemble]]:
    """(method, ensemble) pairs from 'METHOD@ENSEMBLE-GRID' (or a mapping with keys
    method and ensemble, as in a sweep file)."""
    if isinstance(text, dict):
        unknown = set(text) - {"method", "ensemble"}
        if unknown or "method" not in text or "ensemble" not in text:
            raise SpecError(f"a configuration is {{method: ..., ensemble: ...}}, got {text!r}")
        method, ens = text["method"], text["ensemble"]
        grid = [Ensemble.from_dict(ens)] if isinstance(ens, dict) else expand_grid(str(ens))
        return [(method, e) for e in grid]
    method, at, ens = str(text).partition("@")
    if not at or not method or not ens:
        raise SpecError(f"configuration {text!r} is not METHOD@ENSEMBLE; write e.g. "
                        f"'trak@dropout-forward:I=1,D=10'")
    return [(method.strip(), e) for e in expand_grid(ens.strip())]


def load_task(text: str):
    """A Task instance from 'module:Class' or 'path/to/file.py:Class'."""
    import importlib
    import importlib.util

    from raytda.task import Task

    where, sep, name = text.rpartition(":")
    if not sep or not where or not name:
        raise SpecError(f"--task {text!r}: write 'module:Class' or 'path/to/file.py:Class'")
    if where.endswith(".py"):
        path = Path(where).expanduser().absolute()  # the module's __file__ is absolute
        if not path.is_file():
            raise SpecError(f"--task {text!r}: file {path} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(path.stem, None)  # a half-run module must not be found later
            raise SpecError(f"--task {text!r}: {where_raised(e, path)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise SpecError(f"--task {text!r}: cannot import {where!r} ({e})") from None
        except Exception as e:
            raise SpecError(f"--task {text!r}: importing {where!r} fails: "
                            f"{where_raised(e)}") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise SpecError(f"--task {text!r}: {name!r} in {where} is not a raytda Task subclass")
    try:
        return cls()
    except Exception as e:
        raise SpecError(f"--task {text!r}: {name}() fails: {where_raised(e)}") from None


def where_raised(e: BaseException, path: Path | None = None) -> str:
    """'file:line: Type: message' of an exception raised in the user's code: the line of
    ``path`` (the task file) it came through when given, else the innermost frame; a
    SyntaxError names its own file and line."""
    import traceback

    what = f"{type(e).__name__}: {one_line(e) if str(e) else ''}".rstrip(": ")
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}:{e.lineno}: SyntaxError: {e.msg}"
    frames = traceback.extract_tb(e.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        frames = mine or frames
    if not frames:
        return what
    return f"{frames[-1].filename}:{frames[-1].lineno}: {what}"


def cmd_sweep(a: argparse.Namespace) -> int:
    import time

    from raytda.results import format_table, write_results

    sweep = build_sweep(a)
    t0 = time.perf_counter()
    df = sweep.run(cost=a.cost)
    path = write_results(df, a.out, sweep.store.uri)
    plots = sweep.plot(a.out)
    print(format_table(df, table_width()))
    print(f"\n{len(df)} configurations in {time.perf_counter() - t0:.1f} s; "
          f"results: {path}; {plots_line(plots)}")
    return 0


def table_width() -> int | None:
    """Columns the printed results table may take: the terminal's (or ``$COLUMNS``);
    None (the whole table) where stdout is a file or a pipe and ``$COLUMNS`` is unset."""
    import os
    import shutil

    if os.environ.get("COLUMNS", "").strip() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def plots_line(plots: list[Path]) -> str:
    """Where the plots went, or why there are none (no LDS to draw against cost)."""
    if not plots:
        return "plots: none (no LDS: an attribution-only sweep has nothing to plot)"
    return f"plots: {', '.join(str(p) for p in plots)}"


def cmd_plan(a: argparse.Namespace) -> int:
    sweep = build_sweep(a)
    plan = sweep.plan()
    print(plan.summary())
    print(sweep.estimate(plan).line())
    return 0


def cmd_report(a: argparse.Namespace) -> int:

    from raytda.plot import plot_results
    from raytda.results import add_pareto, check_cost, format_table

    check_cost(a.cost)
    path = Path(a.dir) / "results.parquet"
    if not path.is_file():
        raise SpecError(f"{path} not found; run `raytda sweep --out {a.dir}` first")
    df = add_pareto(read_results(path), a.cost)
    print(format_table(df, table_width()))
    plots = plot_results(df, a.dir)
    print(plots_line(plots))
    return 0


def read_results(path: Path):
    """A run's results table; a file that is not one is a one-line SpecError."""
    import pandas as pd

    from raytda.results import COST_AXES

    rerun = f"rerun `raytda sweep --out {path.parent}` to write it again"
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow: ArrowInvalid, OSError, ... on a damaged file
        detail = " ".join(str(e).split()) or e.__class__.__name__
        raise SpecError(f"{path} is not a readable results file ({detail}); {rerun}") from None
    missing = [c for c in ("setting", "lds", *COST_AXES) if c not in df]
    if missing:
        raise SpecError(f"{path} is not a raytda results file (no columns {missing}); {rerun}")
    return df


def cmd_scores(a: argparse.Namespace) -> int:
    from raytda.export import export_scores
    from raytda.store import CorruptArtifact

    results = Path(a.dir) / "results.parquet"
    if results.is_file():  # a missing file is export_scores' own error
        read_results(results)
    rebuild = f"rerun the sweep that wrote {a.dir} to rebuild it"
    try:
        paths = export_scores(a.dir, a.ensemble, method=a.method, task=a.setting, k=a.top_k,
                              out=a.out, full=not a.top_k_only, dense=a.dense)
    except CorruptArtifact as e:
        raise SpecError(f"artifact {e.key} is corrupt ({e.why}); {rebuild}") from None
    except KeyError as e:
        # store.meta/get: the configuration's record is missing or unreadable.
        if not str(e.args[0] if e.args else "").startswith("artifact "):
            raise
        raise SpecError(f"{e.args[0]} (missing or corrupt); {rebuild}") from None
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_store(a: argparse.Namespace) -> int:
    from raytda.store import ArtifactStore
    from raytda.store.verify import looks_like_store

    store = ArtifactStore(a.store)
    if not looks_like_store(store):
        inner = ArtifactStore(f"{a.store.rstrip('/')}/store")
        hint = (f"did you mean {inner.uri} (the store of the run directory {a.store})?"
                if looks_like_store(inner) else
                "give the --store (or OUT/store) directory of a sweep")
        what = "is empty or does not exist" if not store.files() else \
            "is not a raytda artifact store (no artifact in it)"
        raise SpecError(f"store {a.store} {what}; {hint}")
    if a.store_cmd == "verify":
        from raytda.store.verify import run_verify

        return run_verify(store, repair=a.repair, progress=not a.quiet)
    if a.store_cmd == "du":
        from raytda.store.usage import run_du

        return run_du(store, tensors=a.tensors)
    from raytda.store.gc import run_gc

    return run_gc(store, dry_run=a.dry_run)


def cmd_list(a: argparse.Namespace) -> int:
    from raytda.catalog import listing

    print(listing())
    return 0


class UsageError(SpecError):
    """A command line argparse refuses, raised instead of argparse's usage block and exit
    so that it is one ``raytda: error:`` line naming the (sub)command and its --help."""


class Parser(argparse.ArgumentParser):
    """argparse, with every error one line (its subcommands are Parsers too: argparse
    makes subparsers of the parent's class)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(usage_line(self.prog, message))

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        # The innermost parser finishes first; its prog names the command whose flags
        # were being read, so an unknown flag after `sweep` is sweep's error.
        if not hasattr(ns, "command_prog"):
            ns.command_prog = self.prog
        return ns, extras

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            raise UsageError(usage_line(ns.command_prog,
                                        f"unrecognized arguments: {' '.join(extras)}"))
        return ns


def usage_line(prog: str, message: str) -> str:
    """'<subcommand>: <what argparse says>; see `<prog> --help`' (one line)."""
    command = prog.partition(" ")[2]
    return f"{command + ': ' if command else ''}{' '.join(message.split())}; see `{prog} --help`"


def parser() -> argparse.ArgumentParser:
    from raytda.catalog import help_epilog
    from raytda.version import __version__

    epilog = help_epilog()
    p = Parser(prog="raytda", description="Training data attribution with "
                                "efficient ensembles, orchestrated by Ray.", epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"raytda {__version__}")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="warning",
                   help="least severe log records shown on stderr, as timestamped lines "
                        "(default warning; progress lines are shown unless --quiet)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("sweep", help="run a sweep and write OUT/results.parquet and plots",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_args(s)
    s.set_defaults(fn=cmd_sweep)
    pl = sub.add_parser("plan", help="show what a sweep would run and what is cached",
                        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_args(pl)
    pl.set_defaults(fn=cmd_plan)
    r = sub.add_parser("report", help="table and plots from a finished run directory")
    r.add_argument("dir")
    r.add_argument("--cost", default="train_time_s")
    r.set_defaults(fn=cmd_report)
    sc = sub.add_parser("scores", help="export a configuration's scores (long Parquet, or a "
                                       "dense safetensors matrix with --dense) and top-k "
                                       "proponents and opponents per test sample (Parquet)")
    sc.add_argument("dir", help="a finished run directory (raytda sweep --out DIR)")
    sc.add_argument("--ensemble", required=True, help="e.g. 'dropout:I=1,D=10'")
    sc.add_argument("--method", help="method of the configuration (when several ran)")
    sc.add_argument("--setting", help="task / setting name (when several ran)")
    sc.add_argument("--top-k", type=int, default=10, help="proponents and opponents per test "
                    "sample (default 10)")
    sc.add_argument("--top-k-only", action="store_true", help="skip the full score table")
    sc.add_argument("--dense", metavar="ORIENTATION", default=None,
                    help="write the full scores as one dense matrix, "
                    "scores_<configuration>_<orientation>.safetensors (tensor 'scores', the "
                    "orientation in its metadata), instead of long Parquet: test-train is "
                    "n_test x n_train, as raytda stores scores and Sweep.scores() returns "
                    "them; train-test is n_train x n_test, as dattri and TRAK lay them out")
    sc.add_argument("--out", help="output directory (default DIR)")
    sc.set_defaults(fn=cmd_scores)
    st = sub.add_parser("store", help="check, measure or clean an artifact store")
    st_sub = st.add_subparsers(dest="store_cmd", required=True, metavar="verify|gc|du")
    v = st_sub.add_parser("verify", help="read every artifact; name what is corrupt, "
                          "truncated, orphaned or stale (exit 1 if anything is)")
    v.add_argument("store", help="store path or URI (a sweep's --store, default OUT/store)")
    v.add_argument("--repair", action="store_true", help="remove what is found; the next "
                   "sweep rebuilds what it needs")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    g = st_sub.add_parser("gc", help="remove artifacts that no result references")
    g.add_argument("store", help="store path or URI")
    g.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    du = st_sub.add_parser("du", help="what takes the space: bytes and artifacts per kind "
                           "(trained models, feature blocks, ...), largest first, and the "
                           "total")
    du.add_argument("store", help="store path or URI")
    du.add_argument("--tensors", action="store_true", help="also split each kind's payload "
                    "bytes by tensor name and dtype (reads every payload's header)")
    st.set_defaults(fn=cmd_store)
    from raytda.tune.cli import add_tune_parser
    add_tune_parser(sub, add_sweep_args, build_sweep)
    ls = sub.add_parser("list", help="the settings (with sizes), ensemble kinds (with their "
                        "fields) and methods (with their parameters) raytda knows")
    ls.set_defaults(fn=cmd_list)
    from raytda.serving.cli import add_serve_parser
    add_serve_parser(sub, add_sweep_args, build_sweep)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (how Kubernetes, SLURM and `kill` stop a job), raised where Ctrl-C's
    KeyboardInterrupt would be so that the same cleanup runs: the Ray executor kills its
    actors and shuts down the Ray it started, and finished artifacts stay in the store."""


def _on_sigterm(signum: int, frame: Any) -> None:
    import signal

    # Once: a second SIGTERM must not interrupt the cleanup the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def one_line(e: BaseException) -> str:
    """An exception's message on one line (pyarrow's and YAML's span several)."""
    return " ".join(str(e).split()) or e.__class__.__name__


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from raytda.errors import RaytdaError
    from raytda.run.logs import configure_logging

    try:
        args = parser().parse_args(argv)
    except UsageError as e:
        print(f"raytda: error: {e}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.fn(args)
    except (RaytdaError, OSError) as e:  # OSError: a full disk, a vanished directory, ...
        print(f"raytda: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Terminated as e:
        # A command that knows how to continue (raytda tune) says so in the exception.
        how = one_line(e) if e.args else "finished artifacts are kept, rerun to resume"
        print(f"raytda: terminated (SIGTERM); {how}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt as e:
        how = one_line(e) if e.args else "finished artifacts are kept, rerun to resume"
        print(f"raytda: interrupted; {how}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
