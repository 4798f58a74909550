"""What a method is given to serve one ensemble member."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from raytda.core.args import ComputeArgs
    from raytda.core.masks import MaskSpec
    from raytda.core.network import Network
    from raytda.core.outputs import ModelOutput
    from raytda.features import Featurizer, GradientFeatures
    from raytda.task import Task


@dataclass
class MemberContext:
    """One ensemble member as its method sees it.

    ``net`` is the member's network in eval mode (only the parameters it is attributed
    over are trainable: all of a model's, or a LoRA adapter's); ``mask`` its dropout
    masks (None: dropout off); ``seed`` its projection seed; ``training_rows`` the train
    rows its weights were fitted on (None when unknown, e.g. imported checkpoints);
    ``features`` how its gradient features are made; ``keep``: featurizers may reuse what
    this process built for earlier members (jobs) or not (the Attributor).
    """

    net: Network
    task: Task
    data: Any
    mask: MaskSpec | None
    seed: int
    args: ComputeArgs
    features: GradientFeatures
    training_rows: np.ndarray | None = None
    keep: bool = True
    #: the member job stores this member's Q on the train set: ``train_features`` reads
    #: it off the featurizing pass into ``train_q``
    wants_q: bool = False
    train_q: torch.Tensor | None = None
    #: the tensors of the jobs its method declared for this member
    #: (``AttributionMethod.member_jobs``), by name
    inputs: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: the same for its features part (``GradientFeatures.member_jobs``): its featurizer's
    feature_inputs: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    _featurizers: dict[int | None, Featurizer] = field(default_factory=dict, repr=False)

    @property
    def output(self) -> ModelOutput:
        """The Task's model output (f and Q)."""
        return self.task.output()

    def featurizer(self, k: int | None) -> Featurizer:
        """The member's featurizer for ``k`` dimensions (None: exact gradients), built once."""
        if k not in self._featurizers:
            # only a part that declares inputs is handed them (its signature takes them)
            extra = {"inputs": self.feature_inputs} if self.feature_inputs else {}
            seed = self.features.projection_seed(self.seed)
            self._featurizers[k] = self.features.featurizer(self.net, k, seed, self.args,
                                                            self.output, self.data, self.keep,
                                                            **extra)
        return self._featurizers[k]

    def train_features(self, fz: Featurizer) -> torch.Tensor:
        """The member's features of every train row; when ``wants_q``, its Q comes out of
        the same pass and is kept in ``train_q`` (methods that featurize the train rows
        themselves call this, so the member job can store it)."""
        if not self.wants_q:
            return fz.features(self.data.train, self.mask, "train")
        feats, self.train_q = fz.features_and_q(self.data.train, self.mask, "train")
        return feats
