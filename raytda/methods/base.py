"""The attribution-method interface and its registry.

A method turns one ensemble member (a network, its dropout mask, its projection seed) into
a payload of tensors stored once, scores any rows of test samples from that payload, and
declares what it needs: TRAK's Q weighting (``needs_q``), per-member projection seeds
(``projected``), which ``Method`` fields change its scores (``params``), whether it
can score new inputs from stored train-side payloads (``serves_new_inputs``) and whether
it needs the rows the member's model was trained on (``uses_training_rows``).
``register_method`` adds one from any module; nothing else in raytda names methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from raytda.registry import Registry

if TYPE_CHECKING:
    import torch

    from raytda.core.args import ComputeArgs
    from raytda.core.masks import MaskSpec
    from raytda.methods.spec import Method


class AttributionMethod:
    """One TDA method. Subclass, set ``name``, implement ``member`` and ``score_rows``."""

    name: ClassVar[str] = ""
    params: ClassVar[tuple[str, ...]] = ()
    #: bumped when the method's math changes, so payloads stored by an earlier revision
    #: are not reused (it enters the keys; revision 0 adds nothing to them)
    revision: ClassVar[int] = 0
    needs_q: ClassVar[bool] = False
    projected: ClassVar[bool] = False
    serves_new_inputs: ClassVar[bool] = False
    #: ``member`` is given ``training_rows=``: the train rows the member's weights were
    #: fitted on (None when unknown, e.g. imported checkpoints)
    uses_training_rows: ClassVar[bool] = False

    @property
    def capabilities(self) -> frozenset[str]:
        """What ensemble kinds may ask of this method (see ``EnsembleKind.needs``)."""
        return frozenset({"q"} if self.needs_q else set()) | frozenset(
            {"projection"} if self.projected else set())

    def check(self, spec: Method, task: Any) -> None:
        """Raise SpecError if this method cannot run on ``task``."""

    def member(self, spec: Method, net: torch.nn.Module, data: Any, mask: MaskSpec | None,
               seed: int, args: ComputeArgs, task: Any
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One member's payload (tensors stored once) and its metadata.

        ``seed`` is the member's projection seed; ``task`` gives the model output
        (``task.output()``) and the training loss (``task.loss``).
        """
        raise NotImplementedError

    def result_columns(self, spec: Method, member_meta: list[dict[str, Any]]
                       ) -> dict[str, Any]:
        """Columns this method adds to a configuration's results row, from its members'
        metadata (e.g. solver diagnostics); none by default."""
        return {}

    def score_rows(self, payload: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
        """Scores (len(rows) x n_train) of the member for test rows ``rows``."""
        return payload["block"][rows]

    def combine(self, mean_scores: torch.Tensor, q_mean: torch.Tensor | None) -> torch.Tensor:
        """The ensemble's scores from the mean member scores (and mean Q when ``needs_q``)."""
        return mean_scores if q_mean is None else mean_scores * q_mean.unsqueeze(0)


METHODS: Registry[AttributionMethod] = Registry("method")
register_method = METHODS.register  # class decorator: a method available by its name
method_class = METHODS.lookup  # the registered method called ``name``
