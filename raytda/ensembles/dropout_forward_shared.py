"""Dropout Ensemble, forward-only, the "shared gradients" reading (TRAK).

Appendix E defines forward-only serving as computing a model's TDA scores "with shared
gradients". Read that way, each of the D masks keeps its own projection, as in the
Dropout Ensemble, but the per-sample gradients are the unmasked model's, computed once
and shared: the gradient features are those of projection-only member (i, d) (projection
seed d, dropout off) and Q is averaged over the I x D masked variants, as in
'dropout-forward'. Serving computes one gradient pass per model and projects it D times
(one :class:`SharedGradientBlocks` job per model, declared here), so masks cost a
projection, a kernel solve and a forward pass each, never a backward pass.

'dropout-forward' keeps the equation of section 3.3 as written: one projection per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.ensembles.dropout import Dropout
from raytda.ensembles.projection_only import ProjectionOnly
from raytda.methods import Method
from raytda.plan.job import BACKWARD_PASS, FeaturePart, Job
from raytda.plan.members import member_deps, member_label
from raytda.plan.seeds import projection_seed
from raytda.specs import Member, stable_hash


@register_ensemble
class DropoutForwardShared(EnsembleKind):
    name = "dropout-forward-shared"
    takes = frozenset({"D", "mask_mode"})
    uses_masks = True
    needs = frozenset({"q", "projection"})

    def members(self, ens, epochs):
        return Dropout().members(ens, epochs)  # Q of every masked variant

    def feature_members(self, ens, epochs):
        return ProjectionOnly().members(ens, epochs)  # (i, projection d), dropout off

    def feature_jobs(self, ev, models):
        # one job per model: its D feature members from one gradient pass
        return tuple(SharedGradientBlocks(m, ev.ensemble.D, ev.method) for m in models)

    def unit_costs(self, m):
        # T_Serving,Forward-only is one more mask on shared gradients: its own projection,
        # kernel solve and scoring (m.member) and a forward-only Q pass; T_Serving adds the
        # one gradient pass (m.shared).
        return replace(super().unit_costs(m), serve_forward_only=m.member + m.q)

    def serve_time(self, ens, u):
        # Appendix E: I x T_Serving + I x (D - 1) x T_Serving,Forward-only (see unit_costs)
        return ens.I * u.serve + ens.I * (ens.D - 1) * u.serve_forward_only


@dataclass(frozen=True, repr=False)
class SharedGradientBlocks(Job):
    """The payloads of the unmasked members (model, projection d), d < D, of one model,
    from its per-sample gradients computed once: one gradient pass, D projections
    (``GradientFeatures.features_for_seeds``), D of the method's ``finalize``.

    Member d's payload equals the MemberBlock payload of ``Member(model, projection=d)``
    (the same projection seed) up to float32 rounding. Each is its own artifact
    (``parts()``), so evaluation reads and caches members one at a time as it does
    MemberBlocks; the job's own record holds the time split.
    """

    model: Job
    D: int
    method: Method
    kind: str = field(default="block", init=False)

    @property
    def task(self):  # type: ignore[override]
        return self.model.task

    def members(self) -> tuple[Member, ...]:
        return tuple(Member(self.model.index, None, None, d) for d in range(self.D))

    def spec(self) -> dict[str, Any]:
        return {"model": self.model.key, "shared_gradients": self.D,
                "method": self.method.hashed()}

    def deps(self) -> tuple[Job, ...]:
        return member_deps(self.model)

    def affinity(self) -> str | None:
        return self.model.key

    def parts(self) -> tuple[FeaturePart, ...]:
        """The D member payloads, in projection order."""
        return tuple(FeaturePart(self.model, mem, "fixed",
                                 f"blockpart-{stable_hash([self.key, d], 20)}")
                     for d, mem in enumerate(self.members()))

    def complete(self, store) -> bool:
        return all(store.has(p.key) for p in self.parts())

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return (n_train + n_test) * BACKWARD_PASS  # one gradient pass serves all D

    def stored_bytes(self, n_train, n_test, model_bytes):
        return self.D * self.method.impl.stored_bytes(self.method, n_train, n_test)

    def describe(self) -> str:
        return (f"{self.method.name} features of {member_label(Member(self.model.index))}, "
                f"projections 0-{self.D - 1} of {self.task.name}")

    def run(self, store, args) -> None:
        """Store member d's payload under ``parts()[d].key``, then the job's record.

        Timing: the job's ``serve_time_s`` is all of it; ``part_serve_s[d]`` is what
        member d alone costs on top of the shared work (its projection, including
        generating P, and its ``finalize``: TRAK's kernel solve); ``shared_serve_s`` is
        the rest (loading the model, the one gradient pass). Evaluation turns these into
        the kind's analytic serving cost.
        """
        from raytda.core.costs import measure, stopwatch
        from raytda.work.serve import load_member, warm_member_imports

        task, impl = self.task, self.method.impl
        data = task.data()
        members = self.members()
        warm_member_imports(self.model)
        with measure(args.device) as m:
            net = load_member(store, self.model, members[0])  # unmasked: no mask is used
            part = self.method.features_part
            seeds = [part.projection_seed(projection_seed(self.model, mem)) for mem in members]
            feats, info = part.features_for_seeds(
                net, data, seeds, self.method.proj_dim, args, task.output())
            payloads, ridges, solve_s = [], [], []
            for f in feats:
                spent = stopwatch(args.device)
                payload, fin = impl.finalize(self.method, f["train"], f["test"])
                solve_s.append(spent())
                payloads.append(payload)
                ridges.append(fin.get("ridge", 0.0))
        part_s = [p + s for p, s in zip(info["project_s"], solve_s)]
        parts = self.parts()
        for d, (part, payload) in enumerate(zip(parts, payloads)):
            store.put(part.key, payload, {"serve_time_s": part_s[d], "ridge": ridges[d],
                                          "part": d, "of": self.key},
                      {"of": self.key, "part": d})
        meta = {"serve_time_s": m.seconds, "serve_wall_s": m.wall_s, "cost_clock": m.clock,
                "peak_bytes": m.peak_bytes, "part_serve_s": part_s,
                "shared_serve_s": max(0.0, m.seconds - sum(part_s)),
                "parts": [p.key for p in parts], **info, "solve_s": solve_s,
                "ridge": max(ridges), "ridges": ridges}
        store.put(self.key, {}, meta, self.spec())
