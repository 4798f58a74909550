"""What the paper-result scripts share: flags, tasks at CPU or paper scale, running or
reading a sweep, markdown tables with the paper's numbers beside ours, and plots.

Every script takes the same core flags:

- ``--setting NAME`` (repeatable) and ``--full`` (the paper's scale; without it each
  setting runs at its CPU scale, stated in :data:`CPU_OVERRIDES` or the Task's file);
- ``--data-root DIR``: the directory holding ``mnist/``, ``cifar2/``, ``maestro/``,
  ``shakespeare/`` (default ``$RAYTDA_DATA``, else ``~/raytda-data``; never relative to the
  script, which ``ray submit`` copies elsewhere);
- ``--store``, ``--out``, ``--executor local|ray``, ``--address``, ``--device``,
  ``--lds-m``, ``--proj-dim``;
- ``--cached-only``: compute nothing, render the table and plot from what the store has.

Scripts are run as ``python experiments/<script>.py``, so this module is imported as a
sibling (``import common``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: CPU-scale reductions for the experiments. cifar2-resnet9 and maestro-mt carry their own
#: CPU scale in their task classes; the MLPs' one scale is the paper's, reduced here.
CPU_OVERRIDES: dict[str, dict[str, Any]] = {
    "mnist-mlp": dict(n_train=1000, n_test=100, epochs=20),
    "cifar2-mlp": dict(n_train=1000, n_test=100, epochs=20),
}
#: why, for each reduced setting (printed under every table)
CPU_REASONS: dict[str, str] = {
    "mnist-mlp": "1000 train / 100 test and 20 epochs instead of 5000 / 500 and 100: 50 LDS "
                 "retrainings plus up to 5 members must fit in minutes on 2 shared CPU cores",
    "cifar2-mlp": "1000 train / 100 test and 20 epochs instead of 5000 / 500 and 50, for the "
                  "same reason",
    "cifar2-resnet9": "width 1/8 (76k parameters), 1000 train / 100 test, 15 epochs instead of "
                      "4.83M parameters, 5000 / 500, 50 epochs (raytda/tasks/cifar2_resnet9.py)",
    "maestro-mt": "2 layers, 4 heads, d 64, ff 128 (0.12M parameters), 64-event windows, 500 "
                  "train / 50 test, Adam lr 1e-3 batch 32 instead of 6 layers, d 512 (13.1M), "
                  "256 events, 5000 / 178, lr 1e-4 batch 64 (raytda/tasks/maestro_mt.py)",
    "shakespeare-gpt": "nanoGPT's character model reduced to 2 layers, d 64, context 64, 2000 "
                       "train windows (raytda/tasks/gpt.py); the task has one scale",
}

#: Appendix J (Figures 4 and 5), the larger settings: each setting's overrides at the CPU
#: scale and at the paper's (--full), and each reduction beside the paper's setup.
APPENDIX_J_CPU: dict[str, dict[str, Any]] = {
    # the task's CPU scale (raytda/tasks/mnist_resnet9.py) with a recipe that trains it in
    # 4 epochs: its SGD lr 0.01 batch 64 reaches 30% test accuracy there (APPENDIX_J_REASONS)
    "mnist-resnet9": dict(optimizer="adam", lr=5e-3, batch_size=16, epochs=4),
    "maestro-mt": dict(n_train=800, epochs=3),
    "shakespeare-gpt": dict(n_train=800, epochs=3),
}
APPENDIX_J_FULL: dict[str, dict[str, Any]] = {
    "mnist-resnet9": {},  # the task's FULL: 60K images
    "maestro-mt": dict(n_train=15000),
    "shakespeare-gpt": {},
}
#: Method fields a setting's CPU scale replaces (with --full every setting keeps its own):
#: mnist-resnet9 at n = 2000 sits at k ~ n, where TRAK's kernel with no ridge collapses LDS
#: (raytda/methods/k_rule.py), so it takes raytda's ridge rule, S = 3
APPENDIX_J_CPU_METHOD: dict[str, dict[str, Any]] = {
    "mnist-resnet9": dict(ridge_scale=3.0),
}
APPENDIX_J_REASONS: dict[str, str] = {
    "mnist-resnet9": "ResNet-9 at width 1/16 (19,526 parameters), 2000 train / 100 test, 4 "
                     "epochs of Adam lr 5e-3 batch 16, TRAK ridge 3 x the kernel's mean "
                     "nonzero eigenvalue; paper: 60K training images with a ResNet whose size, "
                     "test set and recipe it does not state (--full: width 1, 4.83M "
                     "parameters, 60,000 / 500, SGD lr 0.01 momentum 0.9 batch 64, 50 epochs, "
                     "borrowed from its CIFAR-2 ResNet-9, and TRAK's own ridge). Why the "
                     "recipe: 3 epochs of that SGD reach 25-30% test accuracy at 2000 images; "
                     "why the ridge: at k = 2048 ~ n = 2000 the unregularized kernel inverse "
                     "puts LDS at 0 (raytda/methods/k_rule.py; the notes give both measured)",
    "maestro-mt": "2 layers, 4 heads, d 64, ff 128 (0.12M parameters), 64-event windows, 800 "
                  "train / 50 test, 3 epochs, Adam lr 1e-3 batch 32; paper: 15K training "
                  "sequences with the 6-layer, d 512 Music Transformer (13.1M), 256 events, 178 "
                  "test, lr 1e-4 batch 64, 20 epochs",
    "shakespeare-gpt": "2 layers, 4 heads, d 64, context 64 (0.11M parameters), 800 train / 100 "
                       "test windows, 3 epochs; paper: a GPT on tiny Shakespeare with no size, "
                       "data split or schedule stated (nanoGPT's shakespeare-char is 6 layers, d "
                       "384, context 256, 10.7M)",
}
#: what --full still cannot take from the paper (printed instead of reductions)
APPENDIX_J_UNSTATED: dict[str, str] = {
    "mnist-resnet9": "the paper states 60K MNIST images and a ResNet only; ResNet-9 at width 1, "
                     "500 test images and the CIFAR-2 ResNet-9 recipe (SGD lr 0.01, momentum "
                     "0.9, batch 64, 50 epochs) are our choices",
    "maestro-mt": "15,000 training sequences with appendix B's model and recipe (the paper "
                  "states 15K and nothing else changed)",
    "shakespeare-gpt": "the paper states no model size, data split or schedule: the CPU task "
                       "is its only scale",
}


# --------------------------------------------------------------------------- flags


def parser(doc: str, settings: Sequence[str]) -> argparse.ArgumentParser:
    """The shared flags; ``settings`` is the default ``--setting`` list."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--setting", action="append", default=None,
                   help=f"setting / task name (repeatable; default: {', '.join(settings)})")
    p.set_defaults(default_settings=list(settings))
    p.add_argument("--full", action="store_true", help="the paper's scale instead of the CPU one")
    p.add_argument("--data-root", default=None,
                   help="directory holding mnist/, cifar2/, maestro/, shakespeare/ "
                        "(default: $RAYTDA_DATA, else ~/raytda-data)")
    p.add_argument("--store", default=None, help="artifact store (default: runs/<script>/store)")
    p.add_argument("--out", default=str(RESULTS), help="where tables and plots are written")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--lds-m", type=int, default=50, help="LDS subsets (paper: 50)")
    p.add_argument("--proj-dim", type=int, default=2048, help="TRAK projection (paper: 2048)")
    p.add_argument("--cached-only", action="store_true",
                   help="compute nothing: render from the configurations already in the store")
    p.add_argument("--notes", default=None, help="a markdown file appended to the results")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every task (n_train=200, epochs=5, ...): a "
                        "further reduction, recorded in the results")
    return p


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The --set KEY=VALUE pairs (values parsed as JSON when they are)."""
    out = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set n_train=200")
        out[key] = _value(value)
    return out


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (None: the command line), remembering it for the results file."""
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    return a


def command(prog: str, a: argparse.Namespace) -> str:
    return f"Command: `python experiments/{prog} {' '.join(a.argv)}`"


def settings_of(a: argparse.Namespace) -> list[str]:
    return a.setting or a.default_settings


def data_name(setting: str) -> str | None:
    """The data directory name of a built-in setting (None: no files needed)."""
    from raytda.tasks import task_class

    return task_class(setting).DATA_NAME or None


def resolve(a: argparse.Namespace, prog: str) -> int:
    """Resolve data directories and the device before any work; 0, or 2 after printing
    one error line (a missing directory, an unknown setting, an impossible device)."""
    from raytda.data import DataError
    from raytda.data.location import data_dir
    from raytda.run.device import resolve_device
    from raytda.specs import SpecError

    try:
        a.data_dirs = {}
        for s in settings_of(a):
            name = data_name(s)
            given = None if a.data_root is None else str(Path(a.data_root) / (name or ""))
            a.data_dirs[s] = None if name is None else str(data_dir(name, given))
        a.device = resolve_device(a.device, on_cluster=a.executor == "ray")
        a.overrides = set_overrides(a)
        for s in settings_of(a):
            task_for(s, a)  # an unknown override fails here, before any work
    except (DataError, SpecError, KeyError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if a.store is None:
        a.store = f"runs/{Path(prog).stem}{'_full' if a.full else ''}/store"
    return 0


def task_for(setting: str, a: argparse.Namespace, scale: dict[str, Any] | None = None,
             **overrides: Any):
    """The built-in Task at the scale the flags ask for. ``scale``: a script's own overrides
    for this setting at the scale asked for (instead of :data:`CPU_OVERRIDES`'); --set
    still wins over it."""
    from raytda.tasks import get_task

    if scale is None:
        scale = {} if a.full else CPU_OVERRIDES.get(setting, {})
    kw = scale | getattr(a, "overrides", {}) | overrides
    return get_task(setting, data_dir=a.data_dirs.get(setting), full=a.full, **kw)


def appendix_j_task(setting: str, a: argparse.Namespace):
    """A setting of the paper's appendix J (Figures 4 and 5) at the scale asked for."""
    return task_for(setting, a, (APPENDIX_J_FULL if a.full else APPENDIX_J_CPU).get(setting, {}))


def at_paper_scale(task) -> bool:
    """Whether ``task`` is its class's paper scale (``full=True``) with nothing overridden."""
    return task.declared_key == type(task)(full=True).declared_key


def scale_label(task) -> str:
    """'<setting> (n_train / n_test, E epochs)': the scale a panel or table row ran at."""
    s = task.settings
    return f"{task.name} ({s['n_train']} / {s['n_test']}, {task.recipe.epochs} epochs)"


def with_scale_labels(df: pd.DataFrame, tasks: Sequence) -> pd.DataFrame:
    """``df`` with its ``setting`` column written as :func:`scale_label`, so that every
    table row and plot panel says the scale it ran at."""
    labels = {t.name: scale_label(t) for t in tasks}
    return df.assign(setting=df.setting.map(lambda s: labels.get(s, s)))


def reductions(a: argparse.Namespace, reasons: dict[str, str] | None = None,
               unstated: dict[str, str] | None = None) -> list[str]:
    """One line per setting saying what the CPU scale changes and why (``reasons``, default
    :data:`CPU_REASONS`); with --full, what the paper leaves unstated (``unstated``)."""
    reasons = CPU_REASONS if reasons is None else reasons
    if a.full:
        lines = ["- Paper scale (--full): no reduction of the settings."]
        lines += [f"- {s}: {unstated[s]}." for s in settings_of(a) if s in (unstated or {})]
    else:
        lines = [f"- {s}: {reasons[s]}." for s in settings_of(a) if s in reasons]
    if getattr(a, "overrides", None):
        lines.append(f"- further, for every task (--set): {a.overrides}.")
    return lines


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """A sweep's result table, how long this command took, whether it computed, and the
    sweeps it ran (one per group of settings sharing their method overrides)."""

    df: pd.DataFrame
    seconds: float
    cached_only: bool
    sweeps: list[Any]


def run_sweep(a: argparse.Namespace, tasks: Sequence, ensembles: Iterable, methods: Sequence = ("trak",),
              lds_replicates: int = 1,
              method_overrides: dict[str, dict[str, Any]] | None = None) -> Outcome | None:
    """Run (or with --cached-only, read) the sweep; None when nothing is stored yet.

    ``methods``: names (TRAK gets ``--proj-dim``) or :class:`raytda.methods.Method` specs.
    ``method_overrides``: per setting name, Method fields that setting's runs replace (a
    reduction such as a ridge, stated in the results); the settings with the same overrides
    run as one sweep, so the others keep their keys."""
    from raytda import ComputeArgs, LDSSpec, Sweep
    from raytda.methods import Method

    # proj_dim only enters the keys of methods that project (AttributionMethod.params);
    # a Method given whole keeps its own parameters.
    methods = [m if isinstance(m, Method) else Method(m, proj_dim=a.proj_dim) for m in methods]
    overrides = method_overrides or {}
    groups: dict[str, list] = {}
    for t in tasks:
        groups.setdefault(json.dumps(overrides.get(t.name, {}), sort_keys=True), []).append(t)
    t0 = time.perf_counter()
    frames, sweeps = [], []
    for fields, group in groups.items():
        changed = json.loads(fields)
        sweep = Sweep(list(group), [m.replace(**changed) for m in methods], list(ensembles),
                      lds=LDSSpec(m=a.lds_m, models_per_subset=lds_replicates), store=a.store,
                      executor=a.executor, address=a.address, compute=ComputeArgs(device=a.device))
        plan = sweep.plan()
        print(plan.summary(), flush=True)
        df = sweep.cached(plan=plan) if a.cached_only else sweep.run()
        sweeps.append(sweep)
        if df is not None:
            frames.append(df)
    if not frames:
        print("no finished configuration in the store yet", file=sys.stderr)
        return None
    return Outcome(pd.concat(frames, ignore_index=True), time.perf_counter() - t0,
                   a.cached_only, sweeps)


def recorded_compute(sweeps: Sequence) -> float:
    """Seconds every artifact of the sweeps took when it was made (whatever run made it)."""
    from raytda.plan.planner import make_plan

    total = 0.0
    for sweep in sweeps:
        for job in make_plan(sweep.spec).jobs:
            if job.kind == "result" or not sweep.store.has(job.key):
                continue
            meta = sweep.store.meta(job.key) or {}
            total += (float(meta.get("train_time_s", 0.0) or 0.0)
                      + float(meta.get("serve_time_s", 0.0) or 0.0))
    return total


# --------------------------------------------------------------------------- counting


def adapter_counts(task) -> tuple[int, int]:
    """(low-rank factors only, factors plus the adapted layers' biases) of one adapter.

    peft's ``bias='lora_only'`` trains the biases of the adapted layers (q_proj, v_proj):
    they are stored and differentiated, so raytda's ``params`` include them. The paper's
    space costs (Table 6) fit the factors alone, r * (d_in + d_out) per adapted matrix."""
    from raytda.core.lora import attach_adapter

    peft_model = attach_adapter(task.build_model(), task.lora_spec)
    trainable = [(n, p.numel()) for n, p in peft_model.named_parameters() if p.requires_grad]
    return sum(k for n, k in trainable if "lora_" in n), sum(k for _, k in trainable)


# --------------------------------------------------------------------------- writing


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table's lines."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def cell(ours: float | None, paper: float | None = None, fmt: str = "{:.3f}") -> str:
    """'ours (paper)', with '–' for what is missing."""
    o = "–" if ours is None or pd.isna(ours) else fmt.format(ours)
    return o if paper is None else f"{o} ({fmt.format(paper)})"


def lds_cell(row) -> str:
    return "–" if row is None else f"{row.lds:.3f} ± {row.lds_se:.3f}"


def header(title: str, prog: str, a: argparse.Namespace, outcome: Outcome,
           reasons: dict[str, str] | None = None, unstated: dict[str, str] | None = None) -> list[str]:
    """Title, the exact command, how long it ran where and under what load, and the scale's
    reductions (:func:`reductions`)."""
    where = f"{platform.node() or 'this machine'} ({platform.machine()}, {os.cpu_count()} CPUs)"
    ran = ("Rendered from the store (--cached-only): nothing was computed by this command."
           if outcome.cached_only else
           f"Run time of this command: {outcome.seconds / 60:.1f} min on {where}, device "
           f"{a.device}, executor {a.executor}, load average {load()} at the end (the machine "
           f"is shared); cached artifacts are not recomputed.")
    return [f"# {title}", "", command(prog, a),
            "", ran, f"Compute recorded in the store for this sweep's artifacts: "
            f"{recorded_compute(outcome.sweeps) / 60:.1f} min.", "",
            f"LDS over {a.lds_m} retrained subsets (alpha 0.5), TRAK k = {a.proj_dim} where TRAK "
            f"is used; ± is the standard error over test samples.", "",
            "Reductions for this CPU and why:", "", *reductions(a, reasons, unstated), ""]


def load() -> str:
    """The 1, 5 and 15 minute load averages ('n/a' where the OS has none)."""
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def save(a: argparse.Namespace, stem: str, lines: list[str], df: pd.DataFrame,
         extra: dict[str, Any] | None = None) -> Path:
    """Write ``<stem>.md`` (plus --notes), ``<stem>.parquet`` and ``<stem>.json`` to --out."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if a.notes:
        text += "\n" + Path(a.notes).read_text()
    (out / f"{stem}.md").write_text(text)
    df.to_parquet(out / f"{stem}.parquet", index=False)
    args = {k: v for k, v in vars(a).items() if k != "default_settings"}
    (out / f"{stem}.json").write_text(json.dumps({"args": args, **(extra or {})}, indent=1,
                                                 default=str))
    print(text)
    return out / f"{stem}.md"


def check_notes(a: argparse.Namespace, prog: str) -> int:
    """A --notes file that does not exist fails before any work (one line, status 2)."""
    if a.notes and not Path(a.notes).is_file():
        print(f"{prog}: error: --notes file {a.notes} does not exist", file=sys.stderr)
        return 2
    return 0


def pick(df: pd.DataFrame, **where: Any):
    """The one row of ``df`` matching ``where`` (None when there is none)."""
    sub = df
    for k, v in where.items():
        sub = sub[sub[k].isna()] if v is None else sub[sub[k] == v]
    return None if sub.empty else next(sub.itertuples())


# --------------------------------------------------------------------------- plots


def plot_panels(path: Path, panels: Sequence[tuple[str, pd.DataFrame, str, str]],
                series: Callable[[pd.DataFrame], Iterable[tuple[str, pd.DataFrame]]],
                ylabel: str = "LDS") -> Path:
    """One panel per (title, rows, x column, x label); in each, one line per series
    (label, rows sorted by x), LDS with its standard error as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = panels_figure(panels, series, ylabel)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def panels_figure(panels: Sequence[tuple[str, pd.DataFrame, str, str]],
                  series: Callable[[pd.DataFrame], Iterable[tuple[str, pd.DataFrame]]],
                  ylabel: str = "LDS"):
    """The matplotlib Figure :func:`plot_panels` saves. An x that only takes whole
    numbers (I, C) gets integer ticks: 1.5 trained models is not a configuration."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, rows, x, xlabel) in zip(axes[0], panels):
        for label, sub in series(rows):
            sub = sub.sort_values(x)
            ax.errorbar(sub[x], sub["lds"], yerr=sub["lds_se"], marker="o", capsize=3, label=label)
        if len(rows) and all(float(v).is_integer() for v in rows[x]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_grid(a: argparse.Namespace, stem: str, df: pd.DataFrame, by: str, x: str,
              xlabel: str) -> Path:
    """``<stem>.png`` under --out: one panel per value of column ``by`` (setting, method),
    LDS against ``x``, one line per configuration family."""
    return plot_panels(Path(a.out) / f"{stem}.png",
                       [(v, df[df[by] == v], x, xlabel) for v in sorted(df[by].unique())],
                       family_series)


# --------------------------------------------------------------------------- grids over I


def int_list(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def row_name(r) -> str:
    """A configuration family: its kind, with D when the kind takes one."""
    from raytda.ensembles import ensemble_kind

    d = getattr(r, "D", None)
    takes_d = "D" in ensemble_kind(r.ensemble).takes
    return f"{r.ensemble}, D={int(d)}" if takes_d and d is not None and not pd.isna(d) else r.ensemble


def grid_lines(df: pd.DataFrame, column: str, values: Sequence[int],
               paper: Callable[[Any, int], float | None] = lambda r, v: None,
               groups: Sequence[str] = ("setting", "method")) -> list[str]:
    """LDS of each configuration family (rows) at each value of ``column`` (I or C),
    'ours ± se (paper)' where ``paper(row, value)`` knows the paper's number."""
    rows = []
    keyed: dict[tuple, dict[int, Any]] = {}
    for r in df.itertuples():
        keyed.setdefault((*(getattr(r, g) for g in groups), row_name(r)), {})[int(getattr(r, column))] = r
    for key in sorted(keyed):
        by = keyed[key]
        cells = []
        for v in values:
            r = by.get(v)
            p = None if r is None else paper(r, v)
            cells.append("–" if r is None else lds_cell(r) + ("" if p is None else f" ({p:.3f})"))
        rows.append([*key, *cells])
    return md_table([*groups, "ensemble", *(f"{column} = {v}" for v in values)], rows)


def family_series(rows: pd.DataFrame):
    """Plot series: one per configuration family (kind and D)."""
    names = rows.apply(row_name, axis=1)
    for name in sorted(names.unique()):
        yield name, rows[names == name]
