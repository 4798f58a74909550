"""Grad-Dot: inner products of per-sample gradients (exact, or the features part's
projections), averaged over members."""

from __future__ import annotations

from raytda.methods.base import AttributionMethod, register_method


@register_method
class GradDot(AttributionMethod):
    name = "grad-dot"
    normalize = False

    def member(self, spec, ctx):
        from raytda.core.gradsim import similarity_block

        fz = ctx.featurizer(spec.feature_dim)
        test = fz.features(ctx.data.test, ctx.mask, "test").to(ctx.args.device)
        block = similarity_block(test, fz.batches(ctx.data.train, ctx.mask, "train"),
                                 ctx.data.n_train, self.normalize)
        return {"block": block}, fz.describe()
