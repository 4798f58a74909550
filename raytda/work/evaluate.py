"""Body of the evaluation job: member payloads -> ensemble scores (stored in chunks of
test rows) -> LDS against the ground truth, and the configuration's costs."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from raytda.core.args import ComputeArgs
from raytda.core.costs import UnitCosts, measure
from raytda.core.lds import lds_subsets, spearman_columns, summarize
from raytda.ground_truth import GroundTruth
from raytda.plan.jobs import Evaluate, scores_key
from raytda.specs import LDSSpec
from raytda.store import ArtifactStore
from raytda.work.shards import stored_shards


class PayloadCache:
    """Member payloads read from the store, kept while they fit ``budget`` bytes."""

    def __init__(self, store: ArtifactStore, budget: int) -> None:
        self.store, self.budget, self.held = store, budget, 0
        self.items: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def get(self, key: str, prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
            | None = None) -> dict[str, torch.Tensor]:
        """The payload of ``key``, read once and turned by ``prepare`` (a method's
        ``loaded``) into the form it is scored in, which is what is kept."""
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        payload, _ = self.store.get(key)
        if prepare is not None:
            payload = prepare(payload)
        size = sum(t.numel() * t.element_size() for t in payload.values())
        while self.items and self.held + size > self.budget:
            _, old = self.items.popitem(last=False)
            self.held -= sum(t.numel() * t.element_size() for t in old.values())
        if size <= self.budget:
            self.items[key] = payload
            self.held += size
        return payload


def ground_truth(job: Evaluate, store: ArtifactStore, n_train: int, n_test: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """(membership (m, n_train), truth (m, replicates, n_test)), or None without LDS."""
    if isinstance(job.lds, GroundTruth):
        return job.lds.membership(n_train), job.lds.outputs[:, None, :]
    if not isinstance(job.lds, LDSSpec):
        return None
    truth = np.zeros((job.lds.m, job.lds.models_per_subset, n_test))
    for lm in job.lds_models():
        truth[lm.subset, lm.replicate] = store.get(lm.key)[0]["test_margins"].numpy()
    return lds_subsets(n_train, job.lds), truth


def evaluate(job: Evaluate, store: ArtifactStore, args: ComputeArgs) -> None:
    impl = job.method.impl
    data = job.task.data()
    n, m = data.n_train, data.n_test
    # The job's own peak memory (payloads, score chunks, ground truth, LDS) counts in
    # the configuration's peak like its servings' do.
    with measure(args.device) as mem:
        t0 = time.perf_counter()
        needs = job.needs
        block_meta = [store.meta(b.key) for b in needs.features]
        parts = [p.key for p in needs.parts()]  # one payload per feature member
        shards = [stored_shards(store, key) for key in parts]  # None: train side whole
        q_meta, q_mean = [], None
        if needs.q:
            qs = []
            for q in needs.q:  # a QValues job's, or read off a feature pass
                tensors, meta = store.get(q.stored_key(store))
                qs.append(tensors["q"].double())
                q_meta.append(meta)
            q_mean = torch.stack(qs).mean(0)
        truth = ground_truth(job, store, n, m)
        predicted = None if truth is None else np.zeros((truth[0].shape[0], m))

        # Test rows in chunks: no n_test x n_train matrix is ever held, only rows x n_train.
        rows_per_chunk = max(1, args.score_chunk_bytes // (8 * n))
        cache = PayloadCache(store, args.payload_cache_bytes)
        score_s = np.zeros(len(parts))
        chunks = []
        for c, r0 in enumerate(range(0, m, rows_per_chunk)):
            rows = slice(r0, min(m, r0 + rows_per_chunk))
            acc = torch.zeros(rows.stop - rows.start, n, dtype=torch.float64)
            for e, key in enumerate(parts):
                payload = cache.get(key, impl.loaded)  # untimed: a load, not scoring
                if shards[e] is None:
                    t = time.perf_counter()
                    acc += impl.score_rows(payload, rows).double()
                    score_s[e] += time.perf_counter() - t
                    continue
                for a, b, shard_key in shards[e]:  # (test chunk, train shard) blocks
                    shard = cache.get(shard_key)
                    t = time.perf_counter()
                    acc[:, a:b] += impl.score_shard(payload, shard, rows).double()
                    score_s[e] += time.perf_counter() - t
            scores = impl.combine(acc / len(parts), q_mean).float()
            key = scores_key(job.key, c)
            store.put(key, {"scores": scores}, {"rows": [rows.start, rows.stop], "result": job.key},
                      {"result": job.key, "chunk": c})
            chunks.append({"key": key, "rows": [rows.start, rows.stop]})
            if predicted is not None:
                predicted[:, rows] = truth[0].astype(np.float64) @ scores.double().numpy().T
        aggregate_s = time.perf_counter() - t0

        reps = 0 if truth is None else truth[1].shape[1]
        if truth is not None:
            res = summarize(spearman_columns(truth[1].mean(1), predicted))
            per_sample = res.per_sample
        else:
            res, per_sample = None, np.full(m, np.nan)
        ceiling = (summarize(spearman_columns(truth[1][:, 0], truth[1][:, 1])).mean
                   if reps >= 2 else float("nan"))

    ens, kind = job.ensemble, job.ensemble.kind_class
    model_meta = [store.meta(x.key) for x in needs.models]
    adapter_meta = [store.meta(a.key) for a in needs.adapters]
    train_times = [x["train_time_s"] for x in model_meta]
    adapter_times = [x["train_time_s"] for x in adapter_meta]
    serve_block = [x["serve_time_s"] for x in block_meta]
    serve_q = [x["serve_time_s"] for x in q_meta]
    q_unit = float(np.mean(serve_q)) if serve_q else 0.0
    # Each member's own serving plus scoring the test set against it. A feature job that
    # stores several members' payloads (parts) records each one's own serving in the
    # part's meta; what the job took beyond them is work its members share (one
    # gradient pass), counted once per job.
    own, shared = [], []
    for b, meta in zip(needs.features, block_meta):
        stored = b.parts()
        if len(stored) == 1 and stored[0].key == b.key:
            own.append(meta["serve_time_s"])
            continue
        mine = [store.meta(p.key)["serve_time_s"] for p in stored]
        own += mine
        shared.append(max(0.0, meta["serve_time_s"] - sum(mine)))
    member_s = float(np.mean(np.add(own, score_s)))
    shared_s = float(np.mean(shared)) if shared else 0.0
    # T_Serving: one member from scratch. T_Serving,Forward-only: one more mask, Q only
    # (masked-Q reading) or, where gradients are shared, a member on shared gradients.
    unit = UnitCosts(train=float(np.mean(train_times)),
                     serve=shared_s + member_s + q_unit,
                     serve_forward_only=member_s + q_unit if shared else q_unit,
                     train_lora=float(np.mean(adapter_times)) if adapter_times else 0.0)
    adapter_params = int(adapter_meta[0]["params"]) if adapter_meta else 0
    nan = float("nan")
    row = {
        "setting": job.task.name, "task_key": job.task.key, "method": job.method.name,
        "ensemble": ens.kind, "label": ens.label, "I": ens.I, "D": ens.D, "L": ens.L,
        "C": ens.C, "mask_mode": ens.mask_mode,
        "lds": res.mean if res else nan, "lds_se": res.se if res else nan,
        "lds_ceiling": ceiling, "n_test_scored": int(np.isfinite(per_sample).sum()),
        # As if run alone: every training the configuration needs (I x T_train, or
        # I x T_base + I x L x T_lora), each measured once and shared across configs.
        "train_time_s": float(np.sum(train_times) + np.sum(adapter_times)),
        "serve_time_s": float(np.sum(serve_block) + np.sum(serve_q) + aggregate_s),
        "params": kind.stored_params(ens, int(model_meta[0]["params"]), adapter_params),
        # Every job the configuration needs but the ground truth's: trainings (when they
        # were measured), servings and this evaluation.
        "peak_mem_bytes": int(max(mem.peak_bytes, *(x.get("peak_bytes", 0) for x in
                                                    model_meta + adapter_meta + block_meta
                                                    + q_meta))),
        "eval_peak_bytes": int(mem.peak_bytes),
        "analytic_train_time_s": kind.train_time(ens, unit),
        "analytic_serve_time_s": kind.serve_time(ens, unit),
        "n_members": len(parts), "n_q_members": len(q_meta),
        "ridge_max": max((x.get("ridge", 0.0) for x in block_meta), default=0.0),
        "n_test": m, "n_train": n, "score_chunks": chunks, "key": job.key,
        # how gradient features were made, and what they left to a dense projection or out
        "features": job.method.features,
        **method_columns(job.method),
        "features_uncovered": "; ".join(sorted({f"{u['name']} ({u['n_params']}, {u['how']})"
                                                for x in block_meta
                                                for u in x.get("features_uncovered", ())})),
        **impl.result_columns(job.method, block_meta),
    }
    store.put(job.key, {"per_sample_lds": torch.from_numpy(per_sample)}, row, job.spec())


def method_columns(method) -> dict[str, Any]:
    """The results' ``proj_dim`` (the k the features were made with; None for exact
    gradients), ``ridge_scale`` (TRAK's relative ridge; None for a method without one)
    and ``chosen`` (what was chosen per Task and why, ``"; "``-joined; empty where the
    user gave every value) of a resolved Method."""
    k = method.proj_dim if method.impl.feature_dim(method) is not None else None
    return {"proj_dim": k, "ridge_scale": method.ridge_scale,
            "chosen": "; ".join(method.chosen)}
