"""A method registered from user code is a first-class method: keyed by its parameters,
planned, run and reported like the built-in ones, without editing raytda."""

from __future__ import annotations

import pytest
import torch

from raytda import LDSSpec, Sweep
from raytda.methods import METHODS, AttributionMethod, Method, register_method
from raytda.specs import SpecError


class InputKernel(AttributionMethod):
    """Scores by an RBF kernel between raw inputs, exp(-gamma |x - x'|^2): no gradients,
    so the ensemble mean equals one member's block exactly."""

    name = "input-kernel"

    def member(self, spec, ctx):
        gamma = float(spec.options.get("gamma", 1.0))
        (x_tr, _), (x_te, _) = ctx.data.train.tensors(), ctx.data.test.tensors()
        block = torch.exp(-gamma * torch.cdist(x_te, x_tr) ** 2)
        return {"block": block}, {"gamma": gamma}


@pytest.fixture
def registered():
    register_method(InputKernel)
    yield
    METHODS.pop("input-kernel")


def test_registered_method_appears_in_a_sweeps_results(registered, tmp_path):
    sweep = Sweep("toy-mlp", [Method("input-kernel", options={"gamma": 0.5}),
                              Method("trak", proj_dim=8)],
                  ["naive:I=1", "dropout:I=2,D=2"], lds=LDSSpec(m=4), store=str(tmp_path),
                  progress=False)
    df = sweep.run()
    assert set(df["method"]) == {"input-kernel", "trak"} and df["lds"].notna().all()
    data = sweep.spec.tasks[0].data()
    (x_tr, _), (x_te, _) = data.train.tensors(), data.test.tensors()
    expected = torch.exp(-0.5 * torch.cdist(x_te, x_tr) ** 2)
    got = sweep.scores("dropout:I=2,D=2", "input-kernel")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_a_methods_options_enter_its_keys(registered):
    a = Sweep("toy-mlp", Method("input-kernel", options={"gamma": 0.5}), ["naive:I=1"],
              store="/unused", progress=False)
    b = Sweep("toy-mlp", Method("input-kernel", options={"gamma": 2.0}), ["naive:I=1"],
              store="/unused", progress=False)
    ea, eb = a.spec.evaluations()[0], b.spec.evaluations()[0]
    assert ea.key != eb.key and ea.blocks()[0].key != eb.blocks()[0].key
    assert ea.models()[0].key == eb.models()[0].key  # the trained model is shared


def test_a_methods_revision_enters_its_keys_and_only_its_own(registered, monkeypatch):
    def keys():
        sweep = Sweep("toy-mlp", [Method("input-kernel"), Method("grad-dot")], ["naive:I=1"],
                      store="/unused", progress=False)
        return {ev.method.name: ev.blocks()[0].key for ev in sweep.spec.evaluations()}

    before = keys()
    # revision 0 adds nothing
    assert "revision" not in Method("input-kernel", features="dense").hashed()
    monkeypatch.setattr(InputKernel, "revision", 2)
    after = keys()
    assert after["input-kernel"] != before["input-kernel"]  # old payloads are not reused
    assert after["grad-dot"] == before["grad-dot"]


def test_unregistered_and_incapable_methods_fail_before_any_work():
    with pytest.raises(SpecError, match="unknown method 'input-kernel'"):
        Method("input-kernel")
    register_method(InputKernel)
    try:  # no Q weighting, so TRAK's forward-only ensemble is refused
        with pytest.raises(SpecError, match="needs TRAK's Q weighting"):
            Sweep("toy-mlp", "input-kernel", ["dropout-forward:I=1,D=2"], store="/unused")
    finally:
        METHODS.pop("input-kernel")
