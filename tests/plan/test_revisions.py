"""Keys survive upgrades and change only where a job's computation does: a new package
version recomputes nothing; a job class's raised revision recomputes exactly that job and
what reads it. Methods declare jobs of their own (``member_jobs``), made once per member
and shared by every configuration that serves the member."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from test_user_task import GatedTask

import raytda
import raytda.version
from raytda import LDSSpec, Sweep
from raytda.ensembles.lora import TrainAdapter
from raytda.methods import Method
from raytda.methods.base import METHODS, register_method
from raytda.methods.grad_dot import GradDot
from raytda.plan.job import Job
from raytda.plan.members import MemberBlock
from raytda.plan.models import LDSModel, TrainModel

ENSEMBLES = ["naive:I=1", "naive:I=2", "dropout:I=1,D=2"]
LDS = LDSSpec(m=3)


def sweep(store, method: Method | None = None, ensembles=ENSEMBLES) -> Sweep:
    return Sweep(GatedTask(), method or Method("trak", proj_dim=8), ensembles, lds=LDS,
                 store=str(store), progress=False)


def todo(s: Sweep) -> Counter:
    return Counter(j.kind for j in s.plan().todo)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    sweep(store).run()
    return store


def test_a_new_package_version_recomputes_nothing(done, monkeypatch):
    monkeypatch.setattr(raytda.version, "__version__", "99.0.0")
    monkeypatch.setattr(raytda, "__version__", "99.0.0")
    assert sweep(done).plan().todo == []


def test_a_raised_revision_recomputes_that_job_and_its_readers_only(done, monkeypatch):
    # LDS models are read by evaluations only
    monkeypatch.setattr(LDSModel, "revision", 1)
    assert todo(sweep(done)) == Counter({"ldsmodel": LDS.m, "result": len(ENSEMBLES)})


def test_a_raised_model_revision_recomputes_everything_made_from_the_models(done, monkeypatch):
    monkeypatch.setattr(TrainModel, "revision", 1)
    counts = todo(sweep(done))
    assert "ldsmodel" not in counts  # ground truth does not read ensemble models
    assert counts["model"] == 2 and counts["result"] == len(ENSEMBLES)
    assert counts["block"] == 2 + 2  # naive members of models 0, 1; two masked members


def test_an_unrelated_revision_changes_no_key(done, monkeypatch):
    monkeypatch.setattr(TrainAdapter, "revision", 7)  # no LoRA here
    assert sweep(done).plan().todo == []


# ----------------------------------------------------------------- declared member jobs

FITS: list[str] = []  # keys of the declared jobs run in this process


@dataclass(frozen=True, repr=False)
class FitScale(Job):
    """A per-member artifact a method reads: here the mean absolute train label, a
    stand-in for fitted factors (what matters is where it is made and how often)."""

    block: MemberBlock
    kind: str = field(default="testfit", init=False)

    @property
    def task(self):  # type: ignore[override]
        return self.block.task

    def spec(self) -> dict[str, Any]:
        # the member's model and member, not the block's method fields beyond the fit
        return {"model": self.block.model.key, "member": self.block.member.to_dict(),
                "mask_mode": self.block.mask_mode}

    def deps(self) -> tuple[Job, ...]:
        return self.block.model.member_deps()

    def run(self, store, args) -> None:
        FITS.append(self.key)
        y = self.task.data().train.y
        store.put(self.key, {"scale": torch.tensor([float(y.float().abs().mean()) + 1.0])},
                  {"serve_time_s": 0.25}, self.spec())


@register_method
class ScaledGradDot(GradDot):
    """Grad-Dot divided by a per-member scale it declares as a job of its own."""

    name = "test-scaled-grad-dot"

    def member_jobs(self, spec, block):
        return {"scale": FitScale(block)}

    def member(self, spec, ctx):
        payload, info = super().member(spec, ctx)
        scale = ctx.inputs["scale"]["scale"]
        return {k: v / scale for k, v in payload.items()}, info


@pytest.fixture(autouse=False)
def scaled():
    yield Method("test-scaled-grad-dot", proj_dim=8)
    METHODS.pop("test-scaled-grad-dot", None)


def test_a_declared_member_job_runs_once_per_member_and_is_read(tmp_path, scaled):
    FITS.clear()
    s = sweep(tmp_path, scaled, ["naive:I=1", "naive:I=2"])
    assert Counter(j.kind for j in s.plan().todo)["testfit"] == 2  # models 0 and 1
    df = s.run().set_index("label")
    assert len(FITS) == 2 and len(set(FITS)) == 2  # once per member, for both configs
    assert sweep(tmp_path, scaled, ["naive:I=1", "naive:I=2"]).plan().todo == []
    # charged to the configurations that read it, once per artifact (0.25 s recorded)
    plain = sweep(tmp_path, Method("grad-dot", proj_dim=8), ["naive:I=1", "naive:I=2"])
    base = plain.run().set_index("label")
    extra = df["serve_time_s"] - base["serve_time_s"]
    assert extra["naive I=2"] > extra["naive I=1"] > 0.2
    # the method read the artifact: its scores are Grad-Dot's over the declared scale
    scale = float(GatedTask().data().train.y.float().abs().mean()) + 1.0
    torch.testing.assert_close(s.scores("naive:I=1") * scale, plain.scores("naive:I=1"))
