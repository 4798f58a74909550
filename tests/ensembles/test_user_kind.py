"""A kind with a job of its own and a method, both defined here, run through ``Sweep`` and
the ``Attributor`` without a line of raytda changed.

The kind rebuilds 'dropout-forward-shared' from the outside: Q from the I x D masked
variants, features of D projections of one shared, unmasked gradient pass, made by a job
class declared in this file. The method is TRAK without the kernel solve (projected
gradient dot products weighted by Q)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from raytda import Sweep
from raytda.attributor import Attributor
from raytda.ensembles import ENSEMBLES, EnsembleKind, register_ensemble
from raytda.methods import METHODS, AttributionMethod, Method, register_method
from raytda.plan.job import FeaturePart, Job
from raytda.plan.seeds import projection_seed
from raytda.specs import Member, stable_hash
from raytda.tasks import get_task


class QDot(AttributionMethod):
    """Q-weighted dot products of projected gradients; serves new inputs."""

    name = "qdot"
    params = ("proj_dim",)
    needs_q = True
    projected = True
    serves_new_inputs = True

    def finalize(self, spec, train_features, test_features):
        return {"train": train_features, "test": test_features}, {}

    def score_rows(self, payload, rows):
        return payload["test"][rows] @ payload["train"].T

    def query_side(self, payload, device):
        return {"train_t": payload["train"].T.contiguous().to(device)}

    def score_features(self, side, features):
        return features.to(side["train_t"].device) @ side["train_t"]


@dataclass(frozen=True, repr=False)
class OnePassProjections(Job):
    """The D feature members (model i, projection d) of one model from one gradient pass."""

    model: Job
    D: int
    method: Method
    kind: str = field(default="user-block", init=False)

    @property
    def task(self):
        return self.model.task

    def spec(self):
        return {"model": self.model.key, "one_pass": self.D, "method": self.method.hashed()}

    def deps(self):
        return (self.model,)

    def parts(self):
        return tuple(FeaturePart(self.model, Member(self.model.index, projection=d), "fixed",
                                 f"userpart-{stable_hash([self.key, d], 20)}")
                     for d in range(self.D))

    def complete(self, store):
        return all(store.has(p.key) for p in self.parts())

    def run(self, store, args):
        from raytda.work.serve import load_member

        t0 = time.perf_counter()
        task, parts = self.task, self.parts()
        net = load_member(store, self.model, parts[0].member)
        seeds = [projection_seed(self.model, p.member) for p in parts]
        feats, _ = self.method.features_part.features_for_seeds(
            net, task.data(), seeds, self.method.proj_dim, args, task.output())
        for part, f in zip(parts, feats):
            payload, _ = self.method.impl.finalize(self.method, f["train"], f["test"])
            store.put(part.key, payload, {"serve_time_s": 0.0}, {"of": self.key})
        store.put(self.key, {}, {"serve_time_s": time.perf_counter() - t0}, self.spec())


class OnePassKind(EnsembleKind):
    name = "one-pass"
    takes = frozenset({"D"})
    uses_masks = True
    needs = frozenset({"q", "projection"})

    def members(self, ens, epochs):  # Q of every masked variant
        return tuple(Member(i, None, d, d) for i in range(ens.I) for d in range(ens.D))

    def feature_members(self, ens, epochs):
        return tuple(Member(i, projection=d) for i in range(ens.I) for d in range(ens.D))

    def feature_jobs(self, ev, models):
        return tuple(OnePassProjections(m, ev.ensemble.D, ev.method) for m in models)

    def serve_time(self, ens, u):
        return ens.I * u.serve + ens.I * (ens.D - 1) * u.serve_forward_only


@pytest.fixture(scope="module")
def registered():
    register_method(QDot)
    register_ensemble(OnePassKind)
    yield
    METHODS.pop("qdot")
    ENSEMBLES.pop("one-pass")


@pytest.fixture(scope="module")
def finished(registered, tmp_path_factory, one_torch_thread):
    sweep = Sweep(get_task("toy-mlp"), Method("qdot", proj_dim=16),
                  ["one-pass:I=2,D=3", "dropout-forward-shared:I=2,D=3", "naive:I=1"],
                  lds=None, store=str(tmp_path_factory.mktemp("store")), progress=False)
    sweep.run()
    return sweep


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_the_user_kind_reproduces_the_builtin_one(finished):
    """Same Q members, same feature members, same seeds: the same scores as the kind
    raytda ships, from jobs raytda knows nothing about."""
    plan = finished.plan()
    assert plan.todo == []
    ours = finished.evaluation("one-pass:I=2,D=3")
    assert {type(j) for j in ours.blocks()} == {OnePassProjections}
    assert len(ours.needs.parts()) == 6
    builtin = finished.scores("dropout-forward-shared:I=2,D=3")
    assert rel(finished.scores("one-pass:I=2,D=3"), builtin) < 1e-5
    row = finished.results.set_index("label").loc["one-pass I=2 D=3"]
    assert row["n_members"] == 6 and row["n_q_members"] == 6


@pytest.mark.parametrize("ens", ["one-pass:I=2,D=3", "naive:I=1"])
def test_the_attributor_serves_the_user_kind_and_method(finished, ens):
    attr = Attributor.from_sweep(finished, ens)
    x, y = finished.spec.tasks[0].data().test.tensors()
    assert rel(attr.scores(x, y), finished.scores(ens)) < 1e-5
