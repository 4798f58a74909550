"""Dropout Ensemble, forward-only, the "shared gradients" reading (TRAK).

Appendix E defines forward-only serving as computing a model's TDA scores "with shared
gradients". Read that way, each of the D masks keeps its own projection, as in the
Dropout Ensemble, but the per-sample gradients are the unmasked model's, computed once
and shared: the gradient features are those of projection-only member (i, d) (projection
seed d, dropout off) and Q is averaged over the I x D masked variants, as in
'dropout-forward'. Serving computes one gradient pass per model and projects it D times
(one ``SharedGradientBlocks`` job per model), so masks cost a projection, a kernel solve
and a forward pass each, never a backward pass.

'dropout-forward' keeps the equation of section 3.3 as written: one projection per model.
"""

from __future__ import annotations

from raytda.ensembles.base import EnsembleKind, register_ensemble
from raytda.ensembles.dropout import Dropout
from raytda.ensembles.projection_only import ProjectionOnly


@register_ensemble
class DropoutForwardShared(EnsembleKind):
    name = "dropout-forward-shared"
    takes = frozenset({"D", "mask_mode"})
    uses_masks = True
    needs = frozenset({"q", "projection"})
    # Evaluate.blocks() serves the feature members of a model from one gradient pass.
    shares_gradients = True

    def members(self, ens, epochs):
        return Dropout().members(ens, epochs)  # Q of every masked variant

    def feature_members(self, ens, epochs):
        return ProjectionOnly().members(ens, epochs)  # (i, projection d), dropout off

    def serve_time(self, ens, u):
        # Appendix E: I x T_Serving + I x (D - 1) x T_Serving,Forward-only, where for this
        # kind T_Serving,Forward-only is one more mask on shared gradients (a projection,
        # a kernel solve, scoring and a forward-only Q pass) and T_Serving adds the one
        # gradient pass (see raytda.work.evaluate).
        return ens.I * u.serve + ens.I * (ens.D - 1) * u.serve_forward_only
