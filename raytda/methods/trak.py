"""TRAK (eq. 2): projected gradients, a kernel solve per member, Q-weighted mean.

A member's payload is its train side (projected train features Phi and the Cholesky
factor of Phi^T Phi + ridge I) and its projected test features; scores for any test
rows, stored or new, come from that payload alone.
"""

from __future__ import annotations

from raytda.methods.base import AttributionMethod, register_method


@register_method
class TRAK(AttributionMethod):
    name = "trak"
    params = ("proj_dim", "ridge")
    needs_q = True
    projected = True
    serves_new_inputs = True

    def member(self, spec, net, data, mask, seed, args, task):
        from raytda.core.gemm import resolve
        from raytda.core.grads import n_trainable
        from raytda.core.projector_cache import projector
        from raytda.core.trak import trak_features

        # LoRA members: the projection spans the adapter's parameters only. The process
        # keeps built projectors, so a worker builds each distinct one once.
        proj = projector(n_trainable(net), spec.proj_dim, seed, args.proj_memory_bytes,
                         args.device, cpu_gemm=args.cpu_gemm)
        payload, info = trak_features(net, data, proj, mask, spec.ridge, args, task.output())
        # Build time a reused projector saved; serving cost charges it as if built here.
        info["projection_reused_s"] = proj.take_reused_s()
        info["cpu_gemm"] = resolve(args.cpu_gemm)  # the BLAS behind the last bits, recorded
        return payload, info

    def score_rows(self, payload, rows):
        from raytda.core.trak import score_rows

        return score_rows(payload["test_features"][rows], payload["train_features"],
                          payload["chol"])
