"""Results tables: rows from the store, Pareto flags, Parquet I/O."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from raytda.plan.planner import Plan
from raytda.specs import SpecError
from raytda.store import ArtifactStore

COST_AXES = ("train_time_s", "serve_time_s", "params", "peak_mem_bytes")
COLUMNS = ("setting", "method", "ensemble", "I", "D", "L", "lds", "lds_se", "train_time_s",
           "serve_time_s", "params", "peak_mem_bytes", "measured_on", "cost_clock",
           "train_wall_s", "serve_wall_s")


def check_cost(cost: str) -> None:
    """Fail before any work on a cost axis the results table does not have."""
    if cost not in COST_AXES:
        raise SpecError(f"unknown cost axis {cost!r} (--cost); choose one of {list(COST_AXES)}")


def pareto_mask(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """True where no other point has cost <= and quality >= with at least one strict."""
    keep = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = ((cost <= cost[i]) & (quality >= quality[i])
                     & ((cost < cost[i]) | (quality > quality[i])))
        keep[i] = not dominated.any() and np.isfinite(quality[i])
    return keep


def add_pareto(df: pd.DataFrame, cost: str = "train_time_s") -> pd.DataFrame:
    """Add ``pareto_<axis>`` for every cost axis (per setting) and ``pareto`` for ``cost``."""
    if cost not in COST_AXES:
        raise SpecError(f"unknown cost axis {cost!r}; choose one of {list(COST_AXES)}")
    df = df.copy()
    for axis in COST_AXES:
        flags = np.zeros(len(df), dtype=bool)
        for _, idx in df.groupby("setting").groups.items():
            rows = df.loc[idx]
            flags[df.index.get_indexer(idx)] = pareto_mask(rows[axis].to_numpy(float),
                                                           rows["lds"].to_numpy(float))
        df[f"pareto_{axis}"] = flags
    df["pareto"] = df[f"pareto_{cost}"]
    return df


def _recorded(store: ArtifactStore, evaluation, field: str) -> str:
    """The values of meta ``field`` over the artifacts a configuration is charged for (its
    models' trainings, its Q and block servings, its aggregation), joined with ``"; "``;
    artifacts from before the field was recorded count as ``"unrecorded"``."""
    keys = [evaluation.key, *(d.key for d in evaluation.deps() if d.costed)]
    seen = {store.meta(k).get(field) or "unrecorded" for k in keys if store.has(k)}
    return "; ".join(sorted(seen))


def measured_on(store: ArtifactStore, evaluation) -> str:
    """The resources the configuration's costs were measured on, e.g. ``"cpu x1"``."""
    return _recorded(store, evaluation, "resources")


def result_rows(store: ArtifactStore, evaluations) -> pd.DataFrame:
    """One row per finished configuration (its result record) and where its costs were
    measured. ``train_time_s``/``serve_time_s`` are CPU seconds of the jobs' threads
    (``cost_clock`` ``"cpu"``) or device seconds (``"device"``); ``train_wall_s``/
    ``serve_wall_s`` are the same work's wall seconds as it ran, which no cost includes;
    ``train_packed`` is the largest stacked pack the configuration's trainings ran in (1:
    each alone), a packed model's training cost being its share of its pack's loop."""
    from raytda.work.evaluate import method_columns

    skip = {"score_chunks"}
    # proj_dim, features and chosen from the evaluation's resolved Method, so results
    # stored before these columns existed show them too
    return pd.DataFrame([{**{k: v for k, v in store.meta(e.key).items() if k not in skip},
                          "features": e.method.features, **method_columns(e.method),
                          "method_label": e.method.label,
                          "measured_on": measured_on(store, e)} for e in evaluations])


def method_names(df: pd.DataFrame) -> pd.Series:
    """What to call each row's method: its name (``trak``), or its label
    (``trak proj_dim=8192``) where the table holds several variants of that method."""
    if "method_label" not in df:
        return df["method"]
    variants = df.groupby("method")["method_label"].transform("nunique")
    return df["method"].where(variants <= 1, df["method_label"])


def file_stem(label: str) -> str:
    """A method label as part of a file name: ``trak proj_dim=512`` -> ``trak_proj_dim-512``
    (a plain name such as ``trak`` is kept as it is)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace("=", "-")).strip("_")


def warn_unconverged(df: pd.DataFrame) -> None:
    """One warning naming every configuration flagged False in a ``*_converged`` column
    (a method's iterative solve that missed its tolerance, e.g. IF's ``if_converged``)."""
    flags = [c for c in df.columns if c.endswith("_converged")]
    if not flags:
        return
    bad = df[df[flags].eq(False).any(axis=1)]
    if len(bad):
        names = ", ".join(f"{r.method} {r.label} on {r.setting}" for r in bad.itertuples())
        warnings.warn(f"{len(bad)} configuration(s) did not converge ({', '.join(flags)} "
                      f"false; see the diagnostics columns): {names}", RuntimeWarning,
                      stacklevel=3)


def collect_results(plan: Plan, store: ArtifactStore, cost: str = "train_time_s") -> pd.DataFrame:
    df = add_pareto(result_rows(store, plan.evaluations), cost)
    warn_unconverged(df)
    return df


def cached_results(plan: Plan, store: ArtifactStore, cost: str = "train_time_s"
                   ) -> pd.DataFrame | None:
    """The configurations the store already has (None if none), without computing."""
    done = [e for e in plan.evaluations if e.key in plan.cached]
    if not done:
        return None
    df = add_pareto(result_rows(store, done), cost)
    warn_unconverged(df)
    return df


def stored_scores(store: ArtifactStore, result_key: str):
    """Yield (test rows, scores chunk) of a finished configuration, in row order."""
    from raytda.specs import SpecError

    for c in store.meta(result_key)["score_chunks"]:
        if not store.has(c["key"]):
            raise SpecError(f"scores chunk {c['key']} of {result_key} is missing from the "
                            f"store; rerun the sweep to rebuild it")
        tensors, _ = store.get(c["key"])
        yield slice(*c["rows"]), tensors["scores"]


def write_results(df: pd.DataFrame, out: str | Path, store_uri: str | None = None) -> Path:
    """``OUT/results.parquet`` (atomically); with the store's URI in its metadata so that
    ``raytda scores OUT`` finds the scores."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(out) / "results.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    table = pa.Table.from_pandas(df, preserve_index=False)
    if store_uri is not None:
        uri = store_uri if "://" in store_uri else str(Path(store_uri).resolve())
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"raytda.store": uri.encode()})
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


#: the printed table's columns, most wanted first: where the width runs short, the last
#: ones go first (results.parquet keeps every column)
_SHOWN = (("label", "label"), ("lds", "lds"), ("lds_se", "lds_se"),
          ("train_time_s", "train_s"), ("serve_time_s", "serve_s"), ("k", "k"),
          ("features", "features"), ("ridge_scale", "ridge_scale"), ("pareto", "pareto"),
          ("params", "params"), ("method", "method"), ("setting", "setting"),
          ("peak_mem_MiB", "mem_MiB"), ("measured_on", "measured_on"))


def chosen_note(value: object, field: str, chosen: object) -> str:
    """A value as the printed table shows it: ``128 (rule: n=1000, ...)`` where it was
    chosen per Task (``chosen`` holds ``field=value (why)``), else the value alone."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, (int, float)):  # 1024, 3, 0.3 (a k is whole, a scale may not be)
        shown = str(int(value)) if float(value).is_integer() else f"{value:g}"
    else:
        shown = str(value)
    for item in str(chosen or "").split("; "):
        name, _, rest = item.partition("=")
        if name == field and "(" in rest:
            return f"{shown} ({rest.partition('(')[2]}"
    return shown


def _table_view(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["setting", "method", "label", "lds", "lds_se", "train_time_s", "serve_time_s",
            "params", "peak_mem_bytes", "measured_on", "pareto"]
    view = df[[c for c in cols if c in df]].copy()
    view["method"] = method_names(df)  # "trak proj_dim=8192" where variants of trak ran
    if "peak_mem_bytes" in view:
        view["peak_mem_MiB"] = (view.pop("peak_mem_bytes") / 2**20).round(1)
    # the k and features used, with why where they were chosen per Task (rule / declared)
    chosen = df["chosen"] if "chosen" in df else pd.Series([""] * len(df), index=df.index)
    if "proj_dim" in df:
        view.insert(view.columns.get_loc("serve_time_s") + 1 if "serve_time_s" in view
                    else len(view.columns), "k",
                    [chosen_note(v, "proj_dim", c) for v, c in zip(df["proj_dim"], chosen)])
    if "features" in df:
        at = view.columns.get_loc("k") + 1 if "k" in view else len(view.columns)
        view.insert(at, "features",
                    [chosen_note(v, "features", c) for v, c in zip(df["features"], chosen)])
    if "ridge_scale" in df and df["ridge_scale"].notna().any():  # TRAK's ridge, and why
        at = view.columns.get_loc("features") + 1 if "features" in view else len(view.columns)
        view.insert(at, "ridge_scale", [chosen_note(v, "ridge_scale", c)
                                        for v, c in zip(df["ridge_scale"], chosen)])
    return view


def _to_text(view: pd.DataFrame) -> str:
    with pd.option_context("display.width", 100000, "display.max_rows", 100000,
                           "display.max_columns", 1000, "display.max_colwidth", 1000,
                           "display.float_format", "{:.4g}".format):
        return view.to_string(index=False)


def format_table(df: pd.DataFrame, width: int | None = None) -> str:
    """The results as text; with ``width``, no line wider than it.

    Where the whole table does not fit, columns go from the least wanted (where the costs
    were measured, peak memory, ...) and a setting or method shared by every row moves to
    a line above the table; where even label, LDS and the two times do not fit, each
    configuration is a few lines of its own. A last line names what is left out."""
    view = _table_view(df)
    full = _to_text(view)
    if width is None or max(map(len, full.splitlines()), default=0) <= width:
        return full
    head: list[str] = []
    for col in ("setting", "method"):  # one value for every row: said once, above
        if col in view and view[col].nunique() == 1:
            head.append(f"{col}: {view[col].iloc[0]}")
            view = view.drop(columns=col)
    view = view.rename(columns=dict(_SHOWN))
    order = [short for long, short in _SHOWN if short in view]
    dropped: list[str] = []
    while len(order) > 4:  # label, lds, lds_se, train_s at the least
        text = _to_text(view[order])
        if max(map(len, text.splitlines()), default=0) <= width:
            break
        dropped.insert(0, order.pop())
    else:
        text = _stacked(view, order + dropped, width)
        dropped = []
    tail = ([clip_line(f"not shown: {', '.join(dropped)} (all columns are in "
                       f"results.parquet)", width)] if dropped else [])
    return "\n".join([*(clip_line(h, width) for h in head), text, *tail])


def clip_line(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ``...`` where it was cut."""
    return text if len(text) <= width else text[:max(0, width - 3)] + "..."


def _stacked(view: pd.DataFrame, cols: list[str], width: int) -> str:
    """One block per configuration: its label, then ``name value`` pairs wrapped to
    ``width``."""
    blocks = []
    for _, row in view.iterrows():
        lines = [clip_line(str(row.get("label", "")), width)]
        line = " "
        for col in cols:
            if col == "label":
                continue
            value = row[col]
            cell = f" {col} {value:.4g}" if isinstance(value, float) else f" {col} {value}"
            if len(line) + len(cell) > width and line.strip():
                lines.append(clip_line(line, width))
                line = " "
            line += cell
        if line.strip():
            lines.append(clip_line(line, width))
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
