"""Scores out of the store: the full scores as long-format Parquet or as one dense
safetensors matrix, and the top-k per test sample as Parquet.

Everything is written chunk by chunk of test rows (how the store keeps scores), so no
n_test x n_train matrix is held in memory.

Dense orientation: raytda's own is ``test-train`` (n_test x n_train, row i the scores of
test sample i over the training set, as :meth:`raytda.Sweep.scores` returns them);
``train-test`` (n_train x n_test) is the layout dattri and TRAK use. The file's metadata
says which (``orientation``, ``rows``, ``columns``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raytda.results import file_stem, method_names, stored_scores
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
    labels = df["method_label"] if "method_label" in df else df["method"]
    names = method_names(df)
    if method is not None:  # a method's name, or its label when variants of it ran
        hit = hit[(hit["method"] == method) | (labels[hit.index] == method)]
    if task is not None:
        hit = hit[hit["setting"] == task]
    if len(hit) != 1:
        options = sorted(set("'" + names + "' " + df["label"] + " on " + df["setting"]))
        raise SpecError(f"{'no' if hit.empty else 'several'} configurations match {label!r} "
                        f"in {path}; it has {options} (use --method with the quoted name, "
                        f"and --setting)")
    return ArtifactStore(uri.decode()), {**hit.iloc[0].to_dict(),
                                         "method_name": names[hit.index[0]]}


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


#: dense orientation -> (what the rows are, what the columns are)
ORIENTATIONS = {"test-train": ("test", "train"), "train-test": ("train", "test")}

# safetensors dtype names, and an unsigned integer of the same width to copy bytes through
# (numpy has no bfloat16).
_DTYPES = {"float32": ("F32", np.uint32), "float64": ("F64", np.uint64),
           "float16": ("F16", np.uint16), "bfloat16": ("BF16", np.uint16)}


def check_orientation(orientation: str) -> None:
    if orientation not in ORIENTATIONS:
        raise SpecError(f"unknown orientation {orientation!r}; choose one of "
                        f"{sorted(ORIENTATIONS)} (test-train: n_test x n_train, as raytda "
                        f"stores scores; train-test: n_train x n_test, as dattri and TRAK)")


def write_dense(chunks: Iterable[tuple[slice, Any]], n_test: int, n_train: int, path: Path,
                orientation: str = "test-train", metadata: dict[str, str] | None = None,
                name: str = "scores") -> Path:
    """Write test-row chunks of scores (torch tensors, rows x n_train) as one dense
    safetensors tensor ``name`` in ``orientation``, chunk by chunk, atomically.

    The header is written first (the shape is known from ``n_test`` and ``n_train``), then
    each chunk goes into a memory map of the data section: contiguous rows for
    ``test-train``, a column block for ``train-test``. ``metadata`` (strings) is stored
    beside the orientation.
    """
    import torch

    check_orientation(orientation)
    rows_are, cols_are = ORIENTATIONS[orientation]
    shape = (n_test, n_train) if orientation == "test-train" else (n_train, n_test)
    tmp = path.with_name(path.name + ".tmp")
    mm = None
    try:
        for rows, chunk in chunks:
            if mm is None:
                dtype_name, word = _DTYPES.get(str(chunk.dtype).removeprefix("torch."),
                                               (None, None))
                if dtype_name is None:
                    raise SpecError(f"scores of dtype {chunk.dtype} cannot be exported dense")
                nbytes = np.dtype(word).itemsize * shape[0] * shape[1]
                meta = {**(metadata or {}), "orientation": orientation, "rows": rows_are,
                        "columns": cols_are, "n_test": str(n_test), "n_train": str(n_train)}
                header = json.dumps({"__metadata__": meta, name: {
                    "dtype": dtype_name, "shape": list(shape), "data_offsets": [0, nbytes]}},
                    separators=(",", ":")).encode()
                header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes
                with open(tmp, "wb") as f:
                    f.write(len(header).to_bytes(8, "little"))
                    f.write(header)
                    f.truncate(8 + len(header) + nbytes)
                mm = np.memmap(tmp, dtype=word, mode="r+", offset=8 + len(header), shape=shape)
                as_word = {2: torch.int16, 4: torch.int32, 8: torch.int64}[mm.itemsize]
            if tuple(chunk.shape) != (rows.stop - rows.start, n_train):
                raise SpecError(f"scores chunk for test rows {rows.start}:{rows.stop} has "
                                f"shape {tuple(chunk.shape)}, expected "
                                f"({rows.stop - rows.start}, {n_train}); rerun the sweep")
            bits = chunk.contiguous().view(as_word).numpy().view(word)
            if orientation == "test-train":
                mm[rows] = bits
            else:
                mm[:, rows] = bits.T
        if mm is None:
            raise SpecError(f"no scores to write to {path}")
        mm.flush()
        del mm
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def export_scores(run_dir: str | Path, ensemble: str, method: str | None = None,
                  task: str | None = None, k: int = 10, out: str | Path | None = None,
                  full: bool = True, dense: str | None = None) -> list[Path]:
    """Write the full scores and ``topk_<label>.parquet``; returns their paths.

    The full scores are ``scores_<label>.parquet`` (test_index, train_index, score), or,
    with ``dense`` set to an orientation ('test-train' or 'train-test'),
    ``scores_<label>_<dense>.safetensors``: one tensor ``scores``, its orientation in the
    file's metadata.
    """
    if k < 1:
        raise SpecError(f"--top-k must be >= 1, got {k}")
    if dense is not None:
        check_orientation(dense)
    store, row = find_result(run_dir, ensemble, method, task)
    out = Path(out or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{row['setting']}_{file_stem(row['method_name'])}_{row['label'].replace(' ', '_')}"
    written = []
    if full and dense is not None:  # a pass of its own over the chunks (then the top-k's)
        meta = store.meta(row["key"])
        info = {"setting": str(row["setting"]), "method": str(row["method"]),
                "label": str(row["label"]), "result_key": str(row["key"])}
        written.append(write_dense(stored_scores(store, row["key"]), int(meta["n_test"]),
                                   int(meta["n_train"]),
                                   out / f"scores_{stem}_{dense}.safetensors", dense, info))
    long_format = full and dense is None
    parquet = [out / f"scores_{stem}.parquet"] if long_format else []
    parquet.append(out / f"topk_{stem}.parquet")
    return written + _write_parquet(store, row["key"], parquet, k, long_format)


def _write_parquet(store: ArtifactStore, key: str, paths: list[Path], k: int,
                   full: bool) -> list[Path]:
    """The long-format scores (when ``full``) and the top-k, chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = [p.with_suffix(".parquet.tmp") for p in paths]
    writers: list = [None] * len(paths)
    try:
        for rows, chunk in stored_scores(store, key):
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
