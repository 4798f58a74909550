"""What raytda offers, read from its registries: settings (built-in Tasks), ensemble
kinds and methods, for ``raytda list`` and ``raytda --help``.

Nothing here names a setting, kind or method: one registered from user code (before the
CLI runs, or in a test) is listed like a built-in one.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import fields
from typing import Any

from raytda.ensembles import ENSEMBLES
from raytda.ensembles.fields import FIELD_DEFAULTS, FIELD_MEANINGS, FIELDS, SIZE_FIELDS
from raytda.methods import METHODS


def summary(obj: Any) -> str:
    """The first sentence of a registered class's docstring, or of its module's (the
    built-in kinds and methods document themselves at module level)."""
    cls = type(obj)
    doc = cls.__dict__.get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", "")
    para = " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "")
    # The first clause: up to a sentence end (not "eq. 2") or a semicolon.
    first = re.split(r"\.\s+(?=[A-Z])|;\s", para)[0].rstrip(".")
    return first if len(first) <= 80 else first[:77] + "..."


def kind_fields(name: str) -> list[str]:
    """The fields a kind takes, in CLI order (I always)."""
    takes = ENSEMBLES[name].takes
    return [f for f in FIELDS if f == "I" or f in takes]


def method_params(name: str) -> dict[str, Any]:
    """The Method fields a method declares, with their defaults."""
    from raytda.methods.spec import Method

    defaults = {f.name: f.default for f in fields(Method)}
    # proj_dim's and ridge_scale's defaults are chosen per Task (the settings table shows
    # each one's)
    return {p: "per-task" if p in ("proj_dim", "ridge_scale") and defaults.get(p) is None
            else defaults.get(p) for p in METHODS[name].params}


def kinds_rows() -> list[dict[str, str]]:
    rows = []
    for name in sorted(ENSEMBLES):
        k = ENSEMBLES[name]
        needs = ", ".join(sorted(k.needs)) or "-"
        rows.append({"kind": name, "fields": ",".join(kind_fields(name)), "method needs": needs,
                     "what": summary(k)})
    return rows


def methods_rows() -> list[dict[str, str]]:
    rows = []
    for name in sorted(METHODS):
        m = METHODS[name]
        params = ", ".join(f"{p}={v}" for p, v in method_params(name).items()) or "-"
        caps = [c for c, on in (("Q", m.needs_q), ("projection", m.projected),
                                ("new inputs", m.serves_new_inputs)) if on]
        rows.append({"method": name, "parameters (default)": params,
                     "offers": ", ".join(caps) or "-", "what": summary(m)})
    return rows


def setting_rows() -> list[dict[str, str]]:
    """Every built-in Task at the scale ``--setting NAME`` runs (sizes, epochs, model
    parameters: each model is built once, on the CPU; no data is read)."""
    from raytda.tasks import get_task, task_names
    from raytda.tasks.builtin import BuiltinTask

    rows = []
    for name in task_names():
        task = get_task(name)
        n_train = n_test = "-"
        if isinstance(task, BuiltinTask):
            n_train, n_test = task.settings["n_train"], task.settings["n_test"]
        what = summary(task)
        params = sum(p.numel() for p in task.build_model().parameters())
        epochs = task.recipe.epochs if task.recipe is not None else "-"
        k, features, ridge = default_choices(task, n_train, params)
        rows.append({"setting": name, "n_train": str(n_train), "n_test": str(n_test),
                     "epochs": str(epochs), "params": f"{params:,}", "default k": k,
                     "default features": features, "default ridge_scale": ridge,
                     "what": what})
    return rows


def default_choices(task: Any, n_train: Any, params: int) -> tuple[str, str, str]:
    """What a TRAK that gives neither k, features nor ridge uses on ``task``, and why
    (reads no data: a registered Task whose train size is not a setting shows the k
    rule)."""
    from raytda.features.choice import FEATURES_RULE
    from raytda.methods.k_rule import PROJ_DIM_RULE, RIDGE_RULE
    from raytda.methods.spec import Method
    from raytda.results import chosen_note
    from raytda.tasks.size import TaskSize

    if isinstance(n_train, int):
        object.__setattr__(task, "_task_size", TaskSize(n_train, params))  # as resolved() reads it
        trak = Method("trak").resolved(task)
        chosen = "; ".join(trak.chosen).replace(f"declared by task {task.name}", "declared")
        return (chosen_note(trak.proj_dim, "proj_dim", chosen),
                chosen_note(trak.features, "features", chosen),
                chosen_note(trak.ridge_scale, "ridge_scale", chosen))
    declared_k = getattr(task, "default_proj_dim", None)
    declared_f = getattr(task, "default_features", None)
    declared_r = getattr(task, "default_ridge_scale", None)
    k = f"{declared_k} (declared)" if declared_k else \
        f"rule: pow2 >= {PROJ_DIM_RULE.dims_per_row:g}n"
    features = f"{declared_f} (declared)" if declared_f else \
        f"{FEATURES_RULE.choose(params)} ({FEATURES_RULE.why(params)})"
    ridge = f"{declared_r:g} (declared)" if declared_r is not None else \
        f"{RIDGE_RULE.choose():g} ({RIDGE_RULE.why()})"
    return k, features, ridge


def defaults_help() -> str:
    """How a Method that gives no ``proj_dim`` / ``features`` / ridge gets them
    (``raytda list``)."""
    from raytda.features.choice import FEATURES_RULE
    from raytda.methods.k_rule import PROJ_DIM_RULE, RIDGE_RULE

    return "\n".join(textwrap.fill(t, 88, initial_indent="  ", subsequent_indent="    ") for t in (
        "default k (--proj-dim not given): what the setting declares (the paper's settings: "
        f"2048, as the paper states), else {PROJ_DIM_RULE.describe()} for n train rows "
        "(with the ridge below, TRAK's LDS rises with k up to about n, 4n on the Music "
        "Transformer; "
        "benchmarks/results/lds_vs_k_2026-12-07.md)",
        "default ridge (no ridge / ridge_scale given): what the setting declares (the "
        "paper's settings: 0, TRAK's own, none unless the kernel is singular), else "
        f"{RIDGE_RULE.describe()}, per member (without it LDS dips where k nears n)",
        "default features (--features not given): what the setting declares (the paper's "
        f"settings: dense), else {FEATURES_RULE.describe()} (dense's projection costs "
        "params x k per sample; benchmarks/results/features_threshold_issue28.md); "
        "methods needing exact gradients always get dense",
        "an explicit --proj-dim / --features (or Method field: proj_dim, features, ridge, "
        "ridge_scale; or sweep-file key) always wins",
    ))


def format_rows(rows: list[dict[str, str]]) -> str:
    """Rows as an aligned text table (the last column unpadded)."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}

    def line(r: dict[str, str]) -> str:
        return "  ".join(str(r[c]).ljust(width[c]) for c in cols).rstrip()

    return "\n".join([line({c: c for c in cols}), *(line(r) for r in rows)])


def fields_help() -> str:
    """What I, D, C, L and mask_mode mean (for --help and ``raytda list``)."""
    out = []
    for f in FIELDS:
        extra = ""
        if f in SIZE_FIELDS:
            extra = " (required by the kinds that take it)"
        elif f == "mask_mode":
            extra = f" (default {FIELD_DEFAULTS[f]})"
        out.append(textwrap.fill(f"{f:<10} {FIELD_MEANINGS[f]}{extra}", 88,
                                 initial_indent="  ", subsequent_indent=" " * 13))
    return "\n".join(out)


def listing() -> str:
    """``raytda list``: settings, ensemble kinds with their fields, methods with their
    parameters."""
    return "\n".join([
        "settings (--setting NAME; sizes at the scale the CLI runs):", "",
        format_rows(setting_rows()), "", defaults_help(), "",
        "ensemble kinds (--ensemble 'KIND:I=..,D=..'; 'projection-only' reads D as "
        "projection passes):", "",
        format_rows(kinds_rows()), "", "ensemble fields:", fields_help(), "",
        "methods (--method NAME):", "",
        format_rows(methods_rows()),
    ])


def help_epilog(width: int = 88) -> str:
    """The registries in brief, for ``raytda --help`` (no model is built)."""
    from raytda.tasks import task_names

    def wrapped(text: str) -> str:
        return textwrap.fill(text, width, subsequent_indent="  ", break_on_hyphens=False)

    kinds = "; ".join(f"{k} ({','.join(kind_fields(k))})" for k in sorted(ENSEMBLES))
    return "\n".join([
        wrapped("ensembles are written KIND:FIELD=VALUE,..., e.g. 'dropout:I=5,D=10'; in a "
                "sweep, 'dropout:I=1|3,D=10|25' is a grid of four. Fields:"),
        fields_help(),
        wrapped(f"kinds (their fields): {kinds}"),
        wrapped(f"settings: {', '.join(task_names())}"),
        wrapped(f"methods: {', '.join(sorted(METHODS))}"),
        "`raytda list` describes each setting (sizes), kind and method (parameters).",
    ])
