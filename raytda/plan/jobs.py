"""Artifact jobs: each is a pure function of its spec and its input artifacts.

A job knows its content key (a hash of everything that determines its output, plus the
raytda version), the jobs it depends on, the resources it wants, and how to run itself
against a store. Any executor (in-process, Ray) can run any job whose inputs exist.

Kinds: ``model`` (a trained ensemble model), ``basemodel`` and ``adapter`` (a LoRA
Ensemble's base model on the full set and one LoRA adapter on a half), ``ldsmodel`` (one
LDS ground-truth training, stored as its outputs on the test set), ``q`` (Q = 1 - p_y of a
member on the train set, forward passes only), ``block`` (one member's m x n score block
for a method) and ``result`` (one ensemble configuration: aggregated scores, LDS and costs).

Generative settings (``setting.model.generative``) use the same jobs with the language
model's output f = log-likelihood and its Q (see :mod:`raytda.core.outputs`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from raytda.core.args import ComputeArgs, torch_threads
from raytda.core.masks import MaskSpec
from raytda.data import Dataset, load_data
from raytda.specs import (
    DataSpec,
    Ensemble,
    LDSSpec,
    Member,
    Method,
    Recipe,
    Setting,
    SpecError,
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


def forward_outputs_for(setting: Setting, model, x, y, mask, split: str,
                        args: ComputeArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, Q) of every sample, with the setting's model output; forward passes only."""
    from raytda.core.grads import forward_outputs
    from raytda.core.outputs import output_for

    return forward_outputs(model, x, y, mask, split, args.forward_batch, args.device,
                           output_for(setting.model.generative))


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
        with torch_threads(args.train_threads):
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
        from raytda.core.lds import lds_subsets
        from raytda.core.train import load_weights, train_model

        data = dataset(self.setting.data)
        rows = lds_subsets(data.n_train, self.lds)[self.subset]
        idx = torch.from_numpy(np.flatnonzero(rows))
        seed = derive_seed("lds-model", self.lds.seed, self.subset, self.replicate)
        with torch_threads(args.train_threads):
            trained = train_model(self.setting.model, self.setting.recipe, data.x_train[idx],
                              data.y_train[idx], seed, args.device)
        model = load_weights(self.setting.model, trained.final)
        # f on the test set: the margin, or the log-likelihood for generative settings (the
        # tensor keeps its historical name for both).
        margins, _ = forward_outputs_for(self.setting, model, data.x_test, data.y_test, None,
                                         "test", args)
        store.put(self.key, {"test_margins": margins}, {"train_time_s": trained.train_time_s},
                  self.spec())


@dataclass(frozen=True, repr=False)
class TrainBase(Job):
    """LoRA Ensemble base model ``index``: trained from scratch on the FULL training set
    with the shorter base recipe (``LoRASpec.base_recipe``; paper appendix C.2)."""

    setting: Setting
    index: int
    base_seed: int = 0
    kind: str = field(default="basemodel", init=False)

    @property
    def recipe(self) -> Recipe:
        return self.setting.lora_spec.base_recipe(self.setting.recipe)

    def spec(self) -> dict[str, Any]:
        # The adapters' hyperparameters do not change the base model: keep them out of
        # its key so configurations that differ only there share base models.
        setting = self.setting.to_dict()
        setting.pop("lora", None)
        return {"setting": setting, "recipe": self.recipe.to_dict(), "index": self.index,
                "base_seed": self.base_seed}

    def describe(self) -> str:
        return f"train LoRA base model {self.index} of {self.setting.name}"

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.train import train_model

        data = dataset(self.setting.data)
        with torch_threads(args.train_threads):
            trained = train_model(self.setting.model, self.recipe, data.x_train, data.y_train,
                              derive_seed("base-model", self.base_seed, self.index), args.device)
        tensors = {f"epoch{e}/{k}": v for e, st in trained.states.items() for k, v in st.items()}
        n_par = sum(v.numel() for v in trained.final.values())
        store.put(self.key, tensors, {"train_time_s": trained.train_time_s, "params": n_par,
                                      "epochs": list(trained.states)}, self.spec())


@dataclass(frozen=True, repr=False)
class TrainAdapter(Job):
    """LoRA adapter ``adapter`` of a base model, fine-tuned on its own random half of S.

    Its key depends on the base model and the adapter index, not on L, so an L=1
    configuration reuses the first adapter of an L=3 one. Stores the adapter weights only.
    """

    base: TrainBase
    adapter: int
    kind: str = field(default="adapter", init=False)

    @property
    def setting(self) -> Setting:  # type: ignore[override]
        return self.base.setting

    @property
    def index(self) -> int:
        return self.base.index

    @property
    def base_seed(self) -> int:
        return self.base.base_seed

    def spec(self) -> dict[str, Any]:
        lora = self.setting.lora_spec
        return {"base": self.base.key, "adapter": self.adapter, "lora": lora.to_dict(),
                "recipe": lora.adapter_recipe(self.setting.recipe).to_dict()}

    def deps(self) -> tuple[Job, ...]:
        return (self.base,)

    def describe(self) -> str:
        return f"train LoRA adapter {self.adapter} of base {self.index} of {self.setting.name}"

    def subset(self, n: int) -> np.ndarray:
        from raytda.core.train import half_subset

        return half_subset(n, derive_seed("adapter-subset", self.base_seed, self.index,
                                          self.adapter))

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.lora import train_adapter

        data = dataset(self.setting.data)
        idx = torch.from_numpy(self.subset(data.n_train))
        lora = self.setting.lora_spec
        base = load_state(store, self.base.key, self.base.recipe.epochs)
        with torch_threads(args.train_threads):
            trained = train_adapter(self.setting.model, base, lora,
                                lora.adapter_recipe(self.setting.recipe), data.x_train[idx],
                                data.y_train[idx],
                                derive_seed("adapter", self.base_seed, self.index, self.adapter),
                                args.device)
        store.put(self.key, trained.state, {"train_time_s": trained.train_time_s,
                                            "params": trained.n_params}, self.spec())


# --------------------------------------------------------------------------- serving


def member_mask(model: TrainModel, member: Member, mask_mode: str) -> MaskSpec | None:
    if member.mask is None:
        return None
    seed = derive_seed("mask", model.base_seed, model.index, member.checkpoint, member.mask)
    return MaskSpec(seed, model.setting.model.dropout, mask_mode)


def member_epoch(setting: Setting, member: Member) -> int:
    return setting.recipe.epochs if member.checkpoint is None else member.checkpoint


def load_member(store: ArtifactStore, source: TrainModel | TrainAdapter, member: Member):
    """The member's network in eval mode: trained weights at its checkpoint, or a base
    model with its LoRA adapter (then only the adapter is trainable, i.e. differentiated)."""
    from raytda.core.train import load_weights

    setting = source.setting
    if isinstance(source, TrainAdapter):
        from raytda.core.lora import load_adapted

        base = load_state(store, source.base.key, source.base.recipe.epochs)
        adapter, _ = store.get(source.key)
        return load_adapted(setting.model, base, adapter, setting.lora_spec)
    return load_weights(setting.model, load_state(store, source.key, member_epoch(setting, member)))


def warm_member_imports(source: TrainModel | TrainAdapter) -> None:
    """Import what loading the member needs before serving is timed: a one-off library
    import (peft takes seconds) is not part of any member's serving cost."""
    if isinstance(source, TrainAdapter):
        import peft  # noqa: F401

        import raytda.core.lora  # noqa: F401


def member_deps(source: TrainModel | TrainAdapter) -> tuple[Job, ...]:
    # An adapter member reads its base model's weights too.
    return (source, source.base) if isinstance(source, TrainAdapter) else (source,)


@dataclass(frozen=True, repr=False)
class QValues(Job):
    """TRAK's Q = 1 - p_y on the train set for one (model, checkpoint, mask or adapter):
    forward only."""

    model: TrainModel | TrainAdapter
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
        return member_deps(self.model)

    def describe(self) -> str:
        extra = "" if self.member.adapter is None else f" adapter {self.member.adapter}"
        return f"Q of model {self.model.index} mask {self.member.mask}{extra}"

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.costs import measure

        data = dataset(self.setting.data)
        warm_member_imports(self.model)
        with measure(args.device) as m:
            net = load_member(store, self.model, self.member)
            _, q = forward_outputs_for(self.setting, net, data.x_train, data.y_train,
                                       member_mask(self.model, self.member, self.mask_mode),
                                       "train", args)
        store.put(self.key, {"q": q}, {"serve_time_s": m.seconds, "peak_bytes": m.peak_bytes},
                  self.spec())


@dataclass(frozen=True, repr=False)
class MemberBlock(Job):
    """One member's (n_test x n_train) score block under a method."""

    model: TrainModel | TrainAdapter
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
        return member_deps(self.model)

    def describe(self) -> str:
        m = self.member
        extra = "" if m.adapter is None else f" adapter {m.adapter}"
        return (f"{self.method.name} block model {m.model} ckpt {m.checkpoint} mask {m.mask} "
                f"proj {m.projection}{extra}")

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.costs import measure

        data = dataset(self.setting.data)
        mask = member_mask(self.model, self.member, self.mask_mode)
        meth = self.method
        generative = self.setting.model.generative
        if generative and meth.name == "if":
            raise SpecError("influence functions are not implemented for generative settings; "
                            "use trak, grad-dot or grad-cos")
        from raytda.core.outputs import output_for

        warm_member_imports(self.model)
        with measure(args.device) as m:
            net = load_member(store, self.model, self.member)
            output = output_for(generative)
            if meth.name == "trak":
                from raytda.core.grads import n_trainable
                from raytda.core.projection import GaussianProjector
                from raytda.core.trak import trak_block

                parts = [self.model.base_seed, self.model.index, self.member.checkpoint,
                         self.member.projection]
                if self.member.adapter is not None:  # each adapter its own projection
                    parts += ["adapter", self.member.adapter]
                seed = derive_seed("projection", *parts)
                # LoRA members: features span the adapter only.
                proj = GaussianProjector(n_trainable(net), meth.proj_dim, seed,
                                         args.proj_memory_bytes, args.device,
                                         cpu_gemm=args.cpu_gemm)
                block, info = trak_block(net, data, proj, mask, meth.ridge, args, output)
            elif meth.name in ("grad-dot", "grad-cos"):
                from raytda.core.gradsim import gradsim_block

                block = gradsim_block(net, data, mask, meth.name == "grad-cos", args, output)
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
    def models(self) -> tuple[TrainModel, ...] | tuple[TrainBase, ...]:
        """The I trained models: independent ones, or a LoRA Ensemble's base models."""
        if self.ensemble.kind == "lora":
            return tuple(TrainBase(self.setting, i, self.base_seed)
                         for i in range(self.ensemble.I))
        return tuple(TrainModel(self.setting, i, self.base_seed) for i in range(self.ensemble.I))

    def adapters(self) -> tuple[TrainAdapter, ...]:
        """The I * L LoRA adapters (none for other kinds)."""
        if self.ensemble.kind != "lora":
            return ()
        return tuple(TrainAdapter(b, a) for b in self.models() for a in range(self.ensemble.L))

    def _source(self, models, mem: Member) -> TrainModel | TrainAdapter:
        return models[mem.model] if mem.adapter is None else TrainAdapter(models[mem.model],
                                                                          mem.adapter)

    def blocks(self) -> tuple[MemberBlock, ...]:
        models = self.models()
        out = []
        for mem in feature_members_of(self.ensemble, self.setting.recipe):
            if self.method.name != "trak":  # projection seeds mean nothing without projection
                mem = dataclasses.replace(mem, projection=0)
            out.append(MemberBlock(self._source(models, mem), mem, self.method,
                                   self.ensemble.mask_mode))
        return tuple(out)

    def qvalues(self) -> tuple[QValues, ...]:
        if self.method.name != "trak":
            return ()
        models = self.models()
        seen: dict[str, QValues] = {}
        for mem in members_of(self.ensemble, self.setting.recipe):
            q = QValues(self._source(models, mem), dataclasses.replace(mem, projection=0),
                        self.ensemble.mask_mode)
            seen.setdefault(q.key, q)
        return tuple(seen.values())

    def lds_models(self) -> tuple[LDSModel, ...]:
        return tuple(LDSModel(self.setting, self.lds, j, r)
                     for j in range(self.lds.m) for r in range(self.lds.models_per_subset))

    def deps(self) -> tuple[Job, ...]:
        return (*self.models(), *self.adapters(), *self.qvalues(), *self.blocks(),
                *self.lds_models())

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.core.costs import (
            UnitCosts,
            analytic_params,
            analytic_serve_time,
            analytic_train_time,
        )
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
        adapter_meta = [store.meta(a.key) for a in self.adapters()]
        train_times = [m["train_time_s"] for m in model_meta]
        adapter_times = [m["train_time_s"] for m in adapter_meta]
        serve_block = [m["serve_time_s"] for m in block_meta]
        serve_q = [m["serve_time_s"] for m in q_meta]
        q_unit = float(np.mean(serve_q)) if serve_q else 0.0
        unit = UnitCosts(train=float(np.mean(train_times)),
                         serve=float(np.mean(serve_block)) + q_unit,
                         serve_forward_only=q_unit,
                         train_lora=float(np.mean(adapter_times)) if adapter_times else 0.0)
        ens = self.ensemble
        adapter_params = int(adapter_meta[0]["params"]) if adapter_meta else 0
        row = {
            "setting": self.setting.name, "method": self.method.name, "ensemble": ens.kind,
            "label": ens.label, "I": ens.I, "D": ens.D, "L": ens.L, "C": ens.C,
            "mask_mode": ens.mask_mode, "lds": res.mean, "lds_se": res.se,
            "lds_ceiling": ceiling, "n_test_scored": int(np.isfinite(res.per_sample).sum()),
            # As if run alone: every training the configuration needs (I x T_train, or
            # I x T_base + I x L x T_lora), each measured once and shared across configs.
            "train_time_s": float(np.sum(train_times) + np.sum(adapter_times)),
            "serve_time_s": float(np.sum(serve_block) + np.sum(serve_q) + aggregate_s),
            "params": analytic_params(ens.I, int(model_meta[0]["params"]), ens.L,
                                      adapter_params),
            "peak_mem_bytes": int(max(m["peak_bytes"] for m in block_meta + q_meta)),
            "analytic_train_time_s": analytic_train_time(ens.kind, ens.I, unit, ens.C, ens.L),
            "analytic_serve_time_s": analytic_serve_time(ens.kind, ens.I, ens.D, unit, ens.C,
                                                         ens.L),
            "n_members": len(blocks), "n_q_members": len(q_meta),
            "ridge_max": max((m.get("ridge", 0.0) for m in block_meta), default=0.0),
            "key": self.key,
        }
        store.put(self.key, {"per_sample_lds": torch.from_numpy(res.per_sample)}, row, self.spec())
