"""Body of the shared-gradient block job: one model's gradients, D projections."""

from __future__ import annotations

from raytda.core.args import ComputeArgs
from raytda.core.costs import measure
from raytda.plan.jobs import SharedGradientBlocks, projection_seed
from raytda.store import ArtifactStore
from raytda.work.serve import load_member, warm_member_imports


def shared_gradient_blocks(job: SharedGradientBlocks, store: ArtifactStore,
                           args: ComputeArgs) -> None:
    """Store member d's TRAK payload under ``job.parts()[d]``, then the job's record.

    Timing: the job's ``serve_time_s`` is all of it; ``part_serve_s[d]`` is what member d
    alone costs on top of the shared work (its projection, including generating P, and
    its kernel solve); ``shared_serve_s`` is the rest (loading the model, the one gradient
    pass). Evaluation turns these into the kind's analytic serving cost.
    """
    from raytda.core.trak import shared_gradient_features

    task = job.task
    data = task.data()
    members = job.members()
    warm_member_imports(job.model)
    with measure(args.device) as m:
        net = load_member(store, job.model, members[0])  # unmasked: the mask is never used
        seeds = [projection_seed(job.model, mem) for mem in members]
        payloads, info = shared_gradient_features(net, data, seeds, job.method.proj_dim,
                                                  job.method.ridge, args, task.output())
    part_s = [p + s for p, s in zip(info["project_s"], info["solve_s"])]
    for d, (key, payload) in enumerate(zip(job.parts(), payloads)):
        store.put(key, payload, {"serve_time_s": part_s[d], "ridge": info["ridge"][d],
                                 "part": d, "of": job.key},
                  {"of": job.key, "part": d})
    meta = {"serve_time_s": m.seconds, "peak_bytes": m.peak_bytes, "part_serve_s": part_s,
            "shared_serve_s": max(0.0, m.seconds - sum(part_s)), "parts": list(job.parts()),
            **{k: v for k, v in info.items() if k != "ridge"}, "ridge": max(info["ridge"]),
            "ridges": info["ridge"]}
    store.put(job.key, {}, meta, job.spec())
