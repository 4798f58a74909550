"""EK-FAC in a sweep: on plain, masked and LoRA members, beside IF; the stored scores are
the core's on the member's own training rows and mask; the results list what EK-FAC left
unfactored."""

from __future__ import annotations

import pytest
import torch

from raytda import ComputeArgs, LDSSpec, Sweep
from raytda.core.ekfac import EKFAC
from raytda.methods import Method
from raytda.store import ArtifactStore
from raytda.work.serve import load_member, member_mask

ENSEMBLES = ["naive:I=1", "dropout:I=1,D=2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_torch_thread):
    sweep = Sweep("toy-mlp", [Method("ekfac"), Method("if")], ENSEMBLES, lds=LDSSpec(m=4),
                  store=str(tmp_path_factory.mktemp("store")), progress=False)
    df = sweep.run()
    return sweep, df


def test_results_have_lds_and_say_what_was_left_out(finished):
    _, df = finished
    ek = df[df["method"].str.startswith("ekfac")]
    assert len(ek) == len(ENSEMBLES) and ek["lds"].notna().all()
    # toy-mlp is Linear layers only: everything factored
    assert (ek["ekfac_uncovered"] == "").all() and (ek["ekfac_n_params_uncovered"] == 0).all()


@pytest.mark.parametrize("ens", ENSEMBLES)
def test_stored_scores_are_the_members_own_fit(finished, ens):
    sweep, _ = finished
    ev = sweep.evaluation(ens, method="ekfac")
    block = ev.blocks()[0]
    data = block.task.data()
    rows = block.model.training_rows(data.n_train)
    net = load_member(sweep.store, block.model, block.member)
    mask = member_mask(net, block.model, block.member, block.mask_mode)
    meta = sweep.store.meta(block.inputs["factors"].key)  # the member's factor artifact
    assert meta["curvature_rows"] == len(rows) and meta["factors_on_mask"] == (mask is not None)
    ek = EKFAC(net)
    factors = ek.fit(data.train.subset(rows), block.task.loss, mask=mask, rows=rows,
                     batch_size=ComputeArgs().grad_batch)
    # the member job scores from the stored factors on a network of its own
    torch.testing.assert_close(sweep.store.get(block.inputs["factors"].key)[0], factors,
                               rtol=0, atol=0)
    scorer = EKFAC(load_member(sweep.store, block.model, block.member))
    direct = scorer.scores(factors, data.test, data.train, block.task.output(),
                           damping=block.method.damping, mask=mask)
    stored = sweep.store.get(block.key)[0]["block"]
    # the same computation in this process: measured bit-identical
    torch.testing.assert_close(stored, direct.float(), rtol=0, atol=0)


def test_ekfac_ranks_train_rows_like_gauss_newton_if(finished):
    """EK-FAC approximates the Gauss-Newton curvature IF solves against exactly: per test
    row, their scores must rank train rows alike."""
    sweep, _ = finished
    a = sweep.scores("naive:I=1", method="ekfac")
    b = sweep.scores("naive:I=1", method="if")
    ra, rb = a.argsort(1).argsort(1).double(), b.argsort(1).argsort(1).double()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    spearman = (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))
    # measured 0.62 (toy-mlp, damping 1e-3); unrelated rankings give ~0, a sign error < 0
    assert float(spearman.mean()) > 0.3


def test_lora_members_are_factored_over_their_adapter(tmp_path, one_torch_thread):
    sweep = Sweep("toy-gpt", Method("ekfac"), ["lora:I=1,L=2"], lds=None, store=str(tmp_path),
                  progress=False)
    df = sweep.run()
    s = sweep.scores("lora:I=1,L=2")
    assert torch.isfinite(s).all() and s.abs().max() > 0
    meta = sweep.store.meta(sweep.evaluation("lora:I=1,L=2").blocks()[0].key)
    # the adapter's A and B, and the base layers' biases it trains (peft bias='lora_only':
    # bias-only blocks, a_t = 1); never a frozen base weight
    names = [layer["name"] for layer in meta["ekfac_layers"]]
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert all("lora_" in n or n.endswith("base_layer.bias") for n in names)
    assert df["ekfac_n_params_uncovered"].iloc[0] == sum(u["n_params"] for u in meta["uncovered"])


def test_two_configurations_over_one_member_fit_its_factors_once(tmp_path, one_torch_thread,
                                                                  monkeypatch):
    # naive I=1 and I=2 share model 0; two dampings share every member's fit: the factor
    # artifact is planned once per member and fitted once, whatever reads it.
    import raytda.methods.ekfac as ekfac_module

    fits: list[int] = []
    real = ekfac_module.fit_factors

    def counting(*a, **kw):
        fits.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(ekfac_module, "fit_factors", counting)
    methods = [Method("ekfac", damping=1e-3), Method("ekfac", damping=1e-1)]
    s = Sweep("toy-mlp", methods, ["naive:I=1", "naive:I=2"], lds=LDSSpec(m=3),
              store=str(tmp_path), progress=False)
    todo = [j for j in s.plan().todo if j.kind == "ekfac-factors"]
    assert len(todo) == 2  # members of models 0 and 1
    df = s.run()
    assert len(fits) == 2
    # each configuration is charged its members' fits once
    fit_s = {j.block.model.index: ArtifactStore(str(tmp_path)).meta(j.key)["serve_time_s"]
             for j in todo}
    assert min(fit_s.values()) > 0
    two = df[df["label"] == "naive I=2"]
    assert len(two) == 2 and (two["serve_time_s"] >= fit_s[0] + fit_s[1]).all()
    # the damping is applied at scoring, from the shared factors: other scores
    assert not torch.equal(s.scores("naive:I=1", methods[0]), s.scores("naive:I=1", methods[1]))
