"""Scores out of the store as Parquet: the full table and the top-k per test sample.

Both are written chunk by chunk of test rows, so no n_test x n_train matrix is held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raytda.results import stored_scores
from raytda.specs import SpecError
from raytda.store import ArtifactStore


def find_result(run_dir: str | Path, ensemble: str, method: str | None = None,
                task: str | None = None) -> tuple[ArtifactStore, dict]:
    """The store and result row of a finished run that match the given configuration."""
    import pyarrow.parquet as pq

    from raytda.ensembles import as_ensemble

    path = Path(run_dir) / "results.parquet"
    if not path.is_file():
        raise SpecError(f"{path} not found; run `raytda sweep --out {run_dir}` first")
    table = pq.read_table(path)
    uri = (table.schema.metadata or {}).get(b"raytda.store")
    if uri is None:
        raise SpecError(f"{path} does not say where its store is; rerun the sweep with this "
                        f"version of raytda")
    df = table.to_pandas()
    label = as_ensemble(ensemble).label
    hit = df[df["label"] == label]
    if method is not None:
        hit = hit[hit["method"] == method]
    if task is not None:
        hit = hit[hit["setting"] == task]
    if len(hit) != 1:
        options = sorted(set(df["method"] + " " + df["label"] + " on " + df["setting"]))
        raise SpecError(f"{'no' if hit.empty else 'several'} configurations match {label!r} "
                        f"in {path}; it has {options} (use --method / --setting)")
    return ArtifactStore(uri.decode()), hit.iloc[0].to_dict()


def top_k(scores: np.ndarray, k: int, first_row: int) -> pd.DataFrame:
    """Per test row: the k largest (proponents) and k smallest (opponents) scores."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = []
    for kind, idx in (("proponent", order[:, :k]), ("opponent", order[:, ::-1][:, :k])):
        t, r = np.meshgrid(np.arange(scores.shape[0]), np.arange(k), indexing="ij")
        rows.append(pd.DataFrame({"test_index": (t + first_row).ravel(), "kind": kind,
                                  "rank": (r + 1).ravel(), "train_index": idx.ravel(),
                                  "score": np.take_along_axis(scores, idx, 1).ravel()}))
    return pd.concat(rows, ignore_index=True)


def export_scores(run_dir: str | Path, ensemble: str, method: str | None = None,
                  task: str | None = None, k: int = 10, out: str | Path | None = None,
                  full: bool = True) -> list[Path]:
    """Write ``scores_<label>.parquet`` (test_index, train_index, score) and
    ``topk_<label>.parquet``; returns their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if k < 1:
        raise SpecError(f"--top-k must be >= 1, got {k}")
    store, row = find_result(run_dir, ensemble, method, task)
    out = Path(out or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{row['setting']}_{row['method']}_{row['label'].replace(' ', '_')}"
    paths = [out / f"topk_{stem}.parquet"]
    if full:
        paths.insert(0, out / f"scores_{stem}.parquet")
    tmp = [p.with_suffix(".parquet.tmp") for p in paths]
    writers: list = [None] * len(paths)
    try:
        for rows, chunk in stored_scores(store, row["key"]):
            s = chunk.numpy()
            tables = [pa.Table.from_pandas(top_k(s, k, rows.start), preserve_index=False)]
            if full:
                t, j = np.meshgrid(np.arange(rows.start, rows.stop), np.arange(s.shape[1]),
                                   indexing="ij")
                tables.insert(0, pa.table({"test_index": t.ravel(), "train_index": j.ravel(),
                                           "score": s.ravel()}))
            for i, tab in enumerate(tables):
                if writers[i] is None:
                    writers[i] = pq.ParquetWriter(tmp[i], tab.schema)
                writers[i].write_table(tab)
    except BaseException:
        for w, t in zip(writers, tmp):
            if w is not None:
                w.close()
            t.unlink(missing_ok=True)
        raise
    for w, t, p in zip(writers, tmp, paths):
        w.close()
        t.replace(p)
    return paths
