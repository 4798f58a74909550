"""Artifact jobs: each is a pure function of its spec and its input artifacts.

A job knows its content key (a hash of everything that determines its output, plus the
raytda version), the jobs it depends on, the resources it wants, and how to run itself
against a store. Any executor (in-process, Ray) can run any job whose inputs exist.

Kinds: ``model`` (a trained ensemble model), ``ldsmodel`` (one LDS ground-truth training,
stored as its outputs on the test set), ``q`` (Q = 1 - p_y of a member on the train set,
forward passes only), ``block`` (one member's m x n score block for a method) and
``result`` (one ensemble configuration: aggregated scores, LDS and costs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from raytda.core.args import ComputeArgs
from raytda.core.masks import MaskSpec
from raytda.data import Dataset, load_data
from raytda.specs import (
    DataSpec,
    Ensemble,
    LDSSpec,
    Member,
    Method,
    Setting,
    derive_seed,
    feature_members_of,
    members_of,
    stable_hash,
)
from raytda.store import ArtifactStore
from raytda.version import __version__


@lru_cache(maxsize=4)
def dataset(spec: DataSpec) -> Dataset:
    """Loaded once per process (Ray workers reuse it across jobs)."""
    return load_data(spec)


class Job:
    """Base class: subclasses are frozen dataclasses with ``kind`` and ``spec()``."""

    kind: str = ""
    setting: Setting

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def key(self) -> str:
        return f"{self.kind}-{stable_hash([self.kind, self.spec(), __version__], 20)}"

    def deps(self) -> tuple[Job, ...]:
        return ()

    def resources(self) -> dict[str, float]:
        """Ray resource request; GPU fractions are set by the executor's policy."""
        return {"num_cpus": 1}

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return f"<{self.describe()} {self.key}>"


# --------------------------------------------------------------------------- training


@dataclass(frozen=True, repr=False)
class TrainModel(Job):
    """Ensemble model ``index``: trained from scratch on its own random half of S."""

    setting: Setting
    index: int
    base_seed: int = 0
    kind: str = field(default="model", init=False)

    def spec(self) -> dict[str, Any]:
        return {"setting": self.setting.to_dict(), "index": self.index, "base_seed": self.base_seed}

    def describe(self) -> str:
        return f"train model {self.index} of {self.setting.name}"

    def subset(self, n: int) -> np.ndarray:
        from raytda.core.train import half_subset

        return half_subset(n, derive_seed("subset", self.base_seed, self.index))

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.train import train_model

        data = dataset(self.setting.data)
        idx = torch.from_numpy(self.subset(data.n_train))
        trained = train_model(self.setting.model, self.setting.recipe, data.x_train[idx],
                              data.y_train[idx], derive_seed("model", self.base_seed, self.index),
                              args.device)
        tensors = {f"epoch{e}/{k}": v for e, st in trained.states.items() for k, v in st.items()}
        n_par = sum(v.numel() for k, v in trained.final.items())
        store.put(self.key, tensors, {"train_time_s": trained.train_time_s, "params": n_par,
                                      "epochs": list(trained.states)}, self.spec())


def load_state(store: ArtifactStore, model_key: str, epoch: int) -> dict[str, torch.Tensor]:
    tensors, _ = store.get(model_key)
    prefix = f"epoch{epoch}/"
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise KeyError(f"model {model_key} kept no weights for epoch {epoch}")
    return state


@dataclass(frozen=True, repr=False)
class LDSModel(Job):
    """Ground truth: a model retrained on LDS subset ``subset``; stores f on the test set."""

    setting: Setting
    lds: LDSSpec
    subset: int
    replicate: int = 0
    kind: str = field(default="ldsmodel", init=False)

    def spec(self) -> dict[str, Any]:
        lds = {"m": self.lds.m, "alpha": self.lds.alpha, "seed": self.lds.seed}
        return {"setting": self.setting.to_dict(), "lds": lds, "subset": self.subset,
                "replicate": self.replicate}

    def describe(self) -> str:
        return f"LDS model {self.subset}.{self.replicate} of {self.setting.name}"

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.grads import forward_outputs
        from raytda.core.lds import lds_subsets
        from raytda.core.train import load_weights, train_model

        data = dataset(self.setting.data)
        rows = lds_subsets(data.n_train, self.lds)[self.subset]
        idx = torch.from_numpy(np.flatnonzero(rows))
        seed = derive_seed("lds-model", self.lds.seed, self.subset, self.replicate)
        trained = train_model(self.setting.model, self.setting.recipe, data.x_train[idx],
                              data.y_train[idx], seed, args.device)
        model = load_weights(self.setting.model, trained.final)
        margins, _ = forward_outputs(model, data.x_test, data.y_test, None, "test",
                                     args.forward_batch, args.device)
        store.put(self.key, {"test_margins": margins}, {"train_time_s": trained.train_time_s},
                  self.spec())


# --------------------------------------------------------------------------- serving


def member_mask(model: TrainModel, member: Member, mask_mode: str) -> MaskSpec | None:
    if member.mask is None:
        return None
    seed = derive_seed("mask", model.base_seed, model.index, member.checkpoint, member.mask)
    return MaskSpec(seed, model.setting.model.dropout, mask_mode)


def member_epoch(setting: Setting, member: Member) -> int:
    return setting.recipe.epochs if member.checkpoint is None else member.checkpoint


@dataclass(frozen=True, repr=False)
class QValues(Job):
    """TRAK's Q = 1 - p_y on the train set for one (model, checkpoint, mask): forward only."""

    model: TrainModel
    member: Member  # projection index is irrelevant here and normalized to 0
    mask_mode: str = "fixed"
    kind: str = field(default="q", init=False)

    @property
    def setting(self) -> Setting:  # type: ignore[override]
        return self.model.setting

    def spec(self) -> dict[str, Any]:
        mode = self.mask_mode if self.member.mask is not None else None
        return {"model": self.model.key, "member": self.member.to_dict(), "mask_mode": mode}

    def deps(self) -> tuple[Job, ...]:
        return (self.model,)

    def describe(self) -> str:
        return f"Q of model {self.model.index} mask {self.member.mask}"

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.costs import measure
        from raytda.core.grads import forward_outputs
        from raytda.core.train import load_weights

        data = dataset(self.setting.data)
        state = load_state(store, self.model.key, member_epoch(self.setting, self.member))
        with measure(args.device) as m:
            net = load_weights(self.setting.model, state)
            _, q = forward_outputs(net, data.x_train, data.y_train,
                                   member_mask(self.model, self.member, self.mask_mode), "train",
                                   args.forward_batch, args.device)
        store.put(self.key, {"q": q}, {"serve_time_s": m.seconds, "peak_bytes": m.peak_bytes},
                  self.spec())


@dataclass(frozen=True, repr=False)
class MemberBlock(Job):
    """One member's (n_test x n_train) score block under a method."""

    model: TrainModel
    member: Member
    method: Method
    mask_mode: str = "fixed"
    kind: str = field(default="block", init=False)

    @property
    def setting(self) -> Setting:  # type: ignore[override]
        return self.model.setting

    def spec(self) -> dict[str, Any]:
        mode = self.mask_mode if self.member.mask is not None else None
        return {"model": self.model.key, "member": self.member.to_dict(),
                "method": self.method.hashed(), "mask_mode": mode}

    def deps(self) -> tuple[Job, ...]:
        return (self.model,)

    def describe(self) -> str:
        m = self.member
        return (f"{self.method.name} block model {m.model} ckpt {m.checkpoint} mask {m.mask} "
                f"proj {m.projection}")

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.costs import measure
        from raytda.core.grads import n_params
        from raytda.core.train import load_weights

        data = dataset(self.setting.data)
        state = load_state(store, self.model.key, member_epoch(self.setting, self.member))
        mask = member_mask(self.model, self.member, self.mask_mode)
        meth = self.method
        with measure(args.device) as m:
            net = load_weights(self.setting.model, state)
            if meth.name == "trak":
                from raytda.core.projection import GaussianProjector
                from raytda.core.trak import trak_block

                seed = derive_seed("projection", self.model.base_seed, self.model.index,
                                   self.member.checkpoint, self.member.projection)
                proj = GaussianProjector(n_params(net), meth.proj_dim, seed,
                                         args.proj_memory_bytes, args.device)
                block, info = trak_block(net, data, proj, mask, meth.ridge, args)
            elif meth.name in ("grad-dot", "grad-cos"):
                from raytda.core.gradsim import gradsim_block

                block = gradsim_block(net, data, mask, meth.name == "grad-cos", args)
                info = {}
            else:
                from raytda.core.influence import influence_block

                block, info = influence_block(net, data, mask, meth.damping, meth.cg_max_iter,
                                              meth.cg_tol, meth.hessian_samples, args)
        store.put(self.key, {"block": block},
                  {"serve_time_s": m.seconds, "peak_bytes": m.peak_bytes, **info}, self.spec())


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, repr=False)
class Evaluate(Job):
    """One ensemble configuration: aggregate member blocks, score with LDS, report costs."""

    setting: Setting
    method: Method
    ensemble: Ensemble
    lds: LDSSpec
    base_seed: int = 0
    kind: str = field(default="result", init=False)

    def spec(self) -> dict[str, Any]:
        return {"setting": self.setting.to_dict(), "method": self.method.hashed(),
                "ensemble": self.ensemble.to_dict(), "lds": self.lds.to_dict(),
                "base_seed": self.base_seed}

    def describe(self) -> str:
        return f"evaluate {self.method.name} {self.ensemble.label} on {self.setting.name}"

    # The pieces, each shared with every other configuration that uses it.
    def models(self) -> tuple[TrainModel, ...]:
        return tuple(TrainModel(self.setting, i, self.base_seed) for i in range(self.ensemble.I))

    def blocks(self) -> tuple[MemberBlock, ...]:
        models = self.models()
        out = []
        for mem in feature_members_of(self.ensemble, self.setting.recipe):
            if self.method.name != "trak":  # projection seeds mean nothing without projection
                mem = Member(mem.model, mem.checkpoint, mem.mask, 0)
            out.append(MemberBlock(models[mem.model], mem, self.method, self.ensemble.mask_mode))
        return tuple(out)

    def qvalues(self) -> tuple[QValues, ...]:
        if self.method.name != "trak":
            return ()
        models = self.models()
        seen: dict[str, QValues] = {}
        for mem in members_of(self.ensemble, self.setting.recipe):
            q = QValues(models[mem.model], Member(mem.model, mem.checkpoint, mem.mask, 0),
                        self.ensemble.mask_mode)
            seen.setdefault(q.key, q)
        return tuple(seen.values())

    def lds_models(self) -> tuple[LDSModel, ...]:
        return tuple(LDSModel(self.setting, self.lds, j, r)
                     for j in range(self.lds.m) for r in range(self.lds.models_per_subset))

    def deps(self) -> tuple[Job, ...]:
        return (*self.models(), *self.qvalues(), *self.blocks(), *self.lds_models())

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.costs import UnitCosts, analytic_serve_time
        from raytda.core.lds import lds, lds_subsets, spearman_columns, summarize

        t0 = time.perf_counter()
        blocks, block_meta = [], []
        for job in self.blocks():
            tensors, meta = store.get(job.key)
            blocks.append(tensors["block"])
            block_meta.append(meta)
        q_meta = []
        if self.method.name == "trak":
            qs = []
            for job in self.qvalues():
                tensors, meta = store.get(job.key)
                qs.append(tensors["q"])
                q_meta.append(meta)
            from raytda.core.trak import trak_scores

            scores = trak_scores(qs, blocks)
        else:
            scores = torch.stack(blocks).mean(0)
        aggregate_s = time.perf_counter() - t0

        data = dataset(self.setting.data)
        reps = self.lds.models_per_subset
        truth = np.zeros((self.lds.m, reps, data.n_test))
        for job in self.lds_models():
            truth[job.subset, job.replicate] = store.get(job.key)[0]["test_margins"].numpy()
        subsets = lds_subsets(data.n_train, self.lds)
        res = lds(scores.numpy(), subsets, truth.mean(1))
        ceiling = (summarize(spearman_columns(truth[:, 0], truth[:, 1])).mean
                   if reps >= 2 else float("nan"))

        model_meta = [store.meta(m.key) for m in self.models()]
        train_times = [m["train_time_s"] for m in model_meta]
        serve_block = [m["serve_time_s"] for m in block_meta]
        serve_q = [m["serve_time_s"] for m in q_meta]
        unit = UnitCosts(train=float(np.mean(train_times)),
                         serve=float(np.mean(serve_block)) + (float(np.mean(serve_q)) if serve_q else 0.0),
                         serve_forward_only=float(np.mean(serve_q)) if serve_q else 0.0)
        ens = self.ensemble
        row = {
            "setting": self.setting.name, "method": self.method.name, "ensemble": ens.kind,
            "label": ens.label, "I": ens.I, "D": ens.D, "L": 0, "C": ens.C,
            "mask_mode": ens.mask_mode, "lds": res.mean, "lds_se": res.se,
            "lds_ceiling": ceiling, "n_test_scored": int(np.isfinite(res.per_sample).sum()),
            "train_time_s": float(np.sum(train_times)),
            "serve_time_s": float(np.sum(serve_block) + np.sum(serve_q) + aggregate_s),
            "params": int(ens.I * model_meta[0]["params"]),
            "peak_mem_bytes": int(max(m["peak_bytes"] for m in block_meta + q_meta)),
            "analytic_train_time_s": ens.I * unit.train,
            "analytic_serve_time_s": analytic_serve_time(ens.kind, ens.I, ens.D, unit, ens.C),
            "n_members": len(blocks), "n_q_members": len(q_meta),
            "ridge_max": max((m.get("ridge", 0.0) for m in block_meta), default=0.0),
            "key": self.key,
        }
        store.put(self.key, {"per_sample_lds": torch.from_numpy(res.per_sample)}, row, self.spec())
