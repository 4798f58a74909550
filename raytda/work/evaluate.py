"""Body of the evaluation job, in four steps: member payloads -> ensemble scores (stored
in chunks of test rows; ``score``) -> LDS against the ground truth (``lds_of``) -> the
configuration's costs, by its kind's rule (``cost_columns``) -> its results row
(``results_row``)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raytda.core.args import ComputeArgs
from raytda.core.costs import MeasuredUnits, measure, stopwatch
from raytda.core.lds import lds_subsets, spearman_columns, summarize
from raytda.ground_truth import GroundTruth
from raytda.specs import LDSSpec
from raytda.store import ArtifactStore
from raytda.work.shards import stored_shards

if TYPE_CHECKING:
    from raytda.plan.evaluate import Evaluate
    from raytda.plan.job import KindJobs


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


@dataclass
class Scored:
    """What scoring a configuration leaves: its stored score chunks, each member
    payload's scoring time (s), the Q metas and, with ground truth, the truth and the
    LDS subsets' predicted outputs."""

    chunks: list[dict[str, Any]]
    score_s: np.ndarray  # (members,)
    q_meta: list[dict[str, Any]]
    truth: tuple[np.ndarray, np.ndarray] | None  # membership (m, n), truth (m, reps, n_test)
    predicted: np.ndarray | None  # (m, n_test)


@dataclass(frozen=True)
class LDS:
    """A configuration's LDS: mean and standard error over test rows (NaN without ground
    truth), the per-row values and the ceiling two replicates give each other."""

    mean: float
    se: float
    ceiling: float
    per_sample: np.ndarray  # (n_test,)


def score(job: Evaluate, store: ArtifactStore, args: ComputeArgs) -> Scored:
    """Average the member payloads' scores (weighted by mean Q where the method uses it),
    store them in chunks of test rows, and predict each LDS subset's outputs."""
    impl, needs = job.method.impl, job.needs
    data = job.task.data()
    n, m = data.n_train, data.n_test
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
                part = stopwatch(args.device)
                acc += impl.score_rows(payload, rows).double()
                score_s[e] += part()
                continue
            for a, b, shard_key in shards[e]:  # (test chunk, train shard) blocks
                shard = cache.get(shard_key)
                part = stopwatch(args.device)
                acc[:, a:b] += impl.score_shard(payload, shard, rows).double()
                score_s[e] += part()
        scores = impl.combine(acc / len(parts), q_mean).float()
        key = job.scores_key(c)
        store.put(key, {"scores": scores}, {"rows": [rows.start, rows.stop], "result": job.key},
                  {"result": job.key, "chunk": c})
        chunks.append({"key": key, "rows": [rows.start, rows.stop]})
        if predicted is not None:
            predicted[:, rows] = truth[0].astype(np.float64) @ scores.double().numpy().T
    return Scored(chunks, score_s, q_meta, truth, predicted)


def lds_of(scored: Scored, n_test: int) -> LDS:
    """Spearman correlation, per test row, of the predicted and the true LDS outputs."""
    nan = float("nan")
    if scored.truth is None:
        return LDS(nan, nan, nan, np.full(n_test, np.nan))
    true = scored.truth[1]
    res = summarize(spearman_columns(true.mean(1), scored.predicted))
    ceiling = (summarize(spearman_columns(true[:, 0], true[:, 1])).mean
               if true.shape[1] >= 2 else nan)
    return LDS(res.mean, res.se, ceiling, res.per_sample)


def input_meta(store: ArtifactStore, needs: KindJobs) -> list[dict[str, Any]]:
    """Records of the artifacts methods or features declared per member (fitted factors,
    say): each made once, whichever feature jobs read it, so counted once."""
    keys = {j.key: j for b in needs.features for j in b.inputs.values()}
    return [store.meta(k) for k in keys]


def measured_units(store: ArtifactStore, needs: KindJobs, block_meta: list[dict[str, Any]],
                   scored: Scored, declared: list[dict[str, Any]]) -> MeasuredUnits:
    """Per-unit times the jobs measured. A feature job that stores several members'
    payloads (parts) records each one's own serving in the part's meta; what the job took
    beyond them is work its members share (one gradient pass), counted once per job.
    ``declared``: the records of the artifacts declared per member (``input_meta``)."""
    own, shared = [], []
    for b, meta in zip(needs.features, block_meta):
        stored = b.parts()
        if len(stored) == 1 and stored[0].key == b.key:
            own.append(meta["serve_time_s"])
            continue
        mine = [store.meta(p.key)["serve_time_s"] for p in stored]
        own += mine
        shared.append(max(0.0, meta["serve_time_s"] - sum(mine)))
    adapter_times = [store.meta(a.key)["train_time_s"] for a in needs.adapters]
    serve_q = [x["serve_time_s"] for x in scored.q_meta]
    inputs = sum(x["serve_time_s"] for x in declared)
    return MeasuredUnits(
        train=float(np.mean([store.meta(x.key)["train_time_s"] for x in needs.models])),
        # each member's own serving (with what was declared for it, e.g. fitted factors)
        # plus scoring the test set against it
        member=float(np.mean(np.add(own, scored.score_s))) + inputs / len(own),
        q=float(np.mean(serve_q)) if serve_q else 0.0,
        shared=float(np.mean(shared)) if shared else 0.0,
        train_lora=float(np.mean(adapter_times)) if adapter_times else 0.0)


def cost_columns(job: Evaluate, store: ArtifactStore, block_meta: list[dict[str, Any]],
                 scored: Scored, aggregate_s: float, aggregate_wall_s: float, eval_peak: int,
                 clock: str) -> dict[str, Any]:
    """The configuration's measured and analytic costs (appendix E, by its kind's rule)."""
    ens, kind, needs = job.ensemble, job.ensemble.kind_class, job.needs
    model_meta = [store.meta(x.key) for x in needs.models]
    adapter_meta = [store.meta(a.key) for a in needs.adapters]
    declared = input_meta(store, needs)
    unit = kind.unit_costs(measured_units(store, needs, block_meta, scored, declared))
    adapter_params = int(adapter_meta[0]["params"]) if adapter_meta else 0
    return {
        # In CPU or device seconds (cost_clock): every training the configuration needs
        # (I x T_train, or I x T_base + I x L x T_lora), each measured once and shared
        # across configs.
        "train_time_s": float(np.sum([x["train_time_s"] for x in model_meta])
                              + np.sum([x["train_time_s"] for x in adapter_meta])),
        "serve_time_s": float(np.sum([x["serve_time_s"] for x in block_meta])
                              + np.sum([x["serve_time_s"] for x in scored.q_meta])
                              + np.sum([x["serve_time_s"] for x in declared])
                              + aggregate_s),
        # Wall times of the same work, each as it ran (beside whatever else ran): no cost.
        "train_wall_s": float(sum(x.get("train_wall_s", np.nan)
                                  for x in model_meta + adapter_meta)),
        "serve_wall_s": float(sum(x.get("serve_wall_s", np.nan)
                                  for x in block_meta + scored.q_meta + declared)
                              + aggregate_wall_s),
        "cost_clock": clock,
        # The largest stacked pack its trainings ran in (1: each alone); a packed model's
        # train_time_s is its share of its pack's loop.
        "train_packed": int(max((x.get("packed", 1) for x in model_meta + adapter_meta),
                                default=1)),
        "params": kind.stored_params(ens, int(model_meta[0]["params"]), adapter_params),
        # Every job the configuration needs but the ground truth's: trainings (when they
        # were measured), servings and this evaluation.
        "peak_mem_bytes": int(max(eval_peak, *(x.get("peak_bytes", 0) for x in
                                               model_meta + adapter_meta + block_meta
                                               + scored.q_meta + declared))),
        "eval_peak_bytes": int(eval_peak),
        "analytic_train_time_s": kind.train_time(ens, unit),
        "analytic_serve_time_s": kind.serve_time(ens, unit),
    }


def results_row(job: Evaluate, block_meta: list[dict[str, Any]], scored: Scored, res: LDS,
                costs: dict[str, Any]) -> dict[str, Any]:
    """The configuration's row of the results table."""
    ens, impl = job.ensemble, job.method.impl
    data = job.task.data()
    return {
        "setting": job.task.name, "task_key": job.task.key, "method": job.method.name,
        "ensemble": ens.kind, "label": ens.label, "I": ens.I, "D": ens.D, "L": ens.L,
        "C": ens.C, "mask_mode": ens.mask_mode,
        "lds": res.mean, "lds_se": res.se,
        "lds_ceiling": res.ceiling, "n_test_scored": int(np.isfinite(res.per_sample).sum()),
        "train_time_s": costs["train_time_s"], "serve_time_s": costs["serve_time_s"],
        "train_wall_s": costs["train_wall_s"], "serve_wall_s": costs["serve_wall_s"],
        "cost_clock": costs["cost_clock"], "train_packed": costs["train_packed"],
        "params": costs["params"], "peak_mem_bytes": costs["peak_mem_bytes"],
        "eval_peak_bytes": costs["eval_peak_bytes"],
        "analytic_train_time_s": costs["analytic_train_time_s"],
        "analytic_serve_time_s": costs["analytic_serve_time_s"],
        "n_members": len(scored.score_s), "n_q_members": len(scored.q_meta),
        "ridge_max": max((x.get("ridge", 0.0) for x in block_meta), default=0.0),
        "n_test": data.n_test, "n_train": data.n_train, "score_chunks": scored.chunks,
        "key": job.key,
        # how gradient features were made, and what they left to a dense projection or out
        "features": job.method.features,
        **method_columns(job.method),
        "features_uncovered": "; ".join(sorted({f"{u['name']} ({u['n_params']}, {u['how']})"
                                                for x in block_meta
                                                for u in x.get("features_uncovered", ())})),
        **impl.result_columns(job.method, block_meta),
    }


def evaluate(job: Evaluate, store: ArtifactStore, args: ComputeArgs) -> None:
    """The evaluation job's body: score, LDS, costs, and the results row it stores."""
    # The job's own peak memory (payloads, score chunks, ground truth, LDS) counts in
    # the configuration's peak like its servings' do.
    with measure(args.device) as mem:
        spent, t0 = stopwatch(args.device), time.perf_counter()
        block_meta = [store.meta(b.key) for b in job.needs.features]
        scored = score(job, store, args)
        aggregate_s, aggregate_wall_s = spent(), time.perf_counter() - t0
        res = lds_of(scored, job.task.data().n_test)
    costs = cost_columns(job, store, block_meta, scored, aggregate_s, aggregate_wall_s,
                         mem.peak_bytes, mem.clock)
    row = results_row(job, block_meta, scored, res, costs)
    store.put(job.key, {"per_sample_lds": torch.from_numpy(res.per_sample)}, row, job.spec())


def method_columns(method) -> dict[str, Any]:
    """The results' ``proj_dim`` (the k the features were made with; None for exact
    gradients), ``ridge_scale`` (TRAK's relative ridge; None for a method without one)
    and ``chosen`` (what was chosen per Task and why, ``"; "``-joined; empty where the
    user gave every value) of a resolved Method."""
    k = method.proj_dim if method.feature_dim is not None else None
    return {"proj_dim": k, "ridge_scale": method.ridge_scale,
            "chosen": "; ".join(method.chosen)}
