"""The attribution-method interface and its registry.

A method turns one ensemble member (a :class:`~raytda.methods.context.MemberContext`:
its network, dropout mask, projection seed and gradient features) into a payload of
tensors stored once, scores any rows of test samples from that payload, scores new inputs
from it when it can, and declares what it needs: TRAK's Q weighting (``needs_q``),
per-member projection seeds (``projected``), which ``Method`` fields change its scores
(``params``), exact gradients (``needs_exact_gradients``) and the rows the member's model
was trained on (``uses_training_rows``).
``register_method`` adds one from any module; nothing else in raytda names methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from raytda.registry import Registry

if TYPE_CHECKING:
    import torch

    from raytda.methods.context import MemberContext
    from raytda.methods.spec import Method
    from raytda.plan.job import Job
    from raytda.plan.members import MemberBlock


class AttributionMethod:
    """One TDA method. Subclass, set ``name``, and implement the train side (``member``,
    or ``finalize`` when the default featurization fits) and ``score_rows``; methods that
    serve new inputs also implement ``query_side`` and ``score_features``.

    The batch path (a sweep) calls ``member`` once per ensemble member and stores the
    payload; evaluation scores the stored test rows with ``score_rows`` and averages
    members with ``combine``. The query path (the :class:`~raytda.attributor.Attributor`)
    loads a member's payload once into ``query_side`` and scores features of new inputs,
    made by the member's featurizer, with ``score_features``.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[str, ...]] = ()
    #: bumped when the method's math changes, so payloads stored by an earlier revision
    #: are not reused (it enters the keys; revision 0 adds nothing to them)
    revision: ClassVar[int] = 0
    needs_q: ClassVar[bool] = False
    projected: ClassVar[bool] = False
    serves_new_inputs: ClassVar[bool] = False
    #: the method uses ``MemberContext.training_rows`` (the rows the member was fitted on)
    uses_training_rows: ClassVar[bool] = False
    #: the method needs exact per-sample gradients (a features part that is ``exact``)
    needs_exact_gradients: ClassVar[bool] = False

    @property
    def capabilities(self) -> frozenset[str]:
        """What ensemble kinds may ask of this method (see ``EnsembleKind.needs``)."""
        return frozenset({"q"} if self.needs_q else set()) | frozenset(
            {"projection"} if self.projected else set())

    def key_params(self, spec: Method) -> dict[str, Any]:
        """The ``params`` values that enter keys: all of them, unless a method leaves out
        a value that means what keys made before the field existed meant."""
        return {f: getattr(spec, f) for f in self.params}

    def check(self, spec: Method, task: Any) -> None:
        """Raise SpecError if this method cannot run on ``task`` with ``spec``."""
        from raytda.specs import _check

        if spec.features is None:  # chosen per Task: dense when the method needs exact
            return
        from raytda.features import features_from

        part = features_from(spec.features)
        _check(part.exact or not self.needs_exact_gradients,
               f"method {self.name!r} needs exact per-sample gradients, which gradient "
               f"features {part.name!r} do not give; use features 'dense'")
        # a draw picks a projection: on exact gradients it would only rename the payloads
        _check(not part.redrawn() or self.feature_dim(spec) is not None,
               f"method {self.name!r} compares exact gradients with features "
               f"{spec.features!r}, so no projection draw changes its scores; drop its "
               f"draw option")

    def member_jobs(self, spec: Method, block: MemberBlock) -> dict[str, Job]:
        """Jobs whose artifacts this method reads to serve ``block``'s member, by name:
        shared artifacts keyed by what they depend on (a member's fitted curvature
        factors, say), made once for every configuration that serves the member. Their
        tensors reach ``member`` as ``ctx.inputs[name]``. Default: none."""
        return {}

    def feature_dim(self, spec: Method) -> int | None:
        """Dimensions asked of the member's featurizer: ``proj_dim`` when the method
        projects or the features part always does, else None (exact gradients)."""
        return spec.proj_dim if self.projected or not spec.features_part.exact else None

    def member(self, spec: Method, ctx: MemberContext
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One member's payload (tensors stored once) and its metadata.

        Default: the member's features of every train and test row, then ``finalize``.
        """
        fz = ctx.featurizer(spec.feature_dim)
        train = ctx.train_features(fz)  # and Q from the same pass when the job stores it
        test = fz.features(ctx.data.test, ctx.mask, "test")
        payload, info = self.finalize(spec, train, test)
        # Build time of a projection reused from an earlier job: charged as if built here.
        return payload, {**fz.describe(), **info, "projection_reused_s": fz.reused_s()}

    def finalize(self, spec: Method, train_features: torch.Tensor,
                 test_features: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The payload from a member's train and test features (for the default
        ``member``, and for kinds that make several members' features at once)."""
        raise NotImplementedError(f"method {self.name!r} makes its payload in member()")

    def result_columns(self, spec: Method, member_meta: list[dict[str, Any]]
                       ) -> dict[str, Any]:
        """Columns this method adds to a configuration's results row, from its members'
        metadata (e.g. solver diagnostics); none by default."""
        return {}

    def stored_bytes(self, spec: Method, n_train: int, n_test: int) -> int:
        """About how many bytes one member's payload takes in the store (for the cost
        line printed before a sweep): by default a float32 train x test score matrix."""
        return 4 * n_train * n_test

    def loaded(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A stored payload in the form scoring uses, with what is cheaper to rebuild
        than to store (TRAK: the Gram's factor) rebuilt; as stored by default. Scoring
        accepts either form; evaluation calls this once per payload it reads."""
        return payload

    def score_rows(self, payload: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
        """Scores (len(rows) x n_train) of the member for test rows ``rows``."""
        return payload["block"][rows]

    def combine(self, mean_scores: torch.Tensor, q_mean: torch.Tensor | None) -> torch.Tensor:
        """The ensemble's scores from the mean member scores (and mean Q when ``needs_q``)."""
        return mean_scores if q_mean is None else mean_scores * q_mean.unsqueeze(0)

    # ------------------------------------------------------------------ new inputs

    def query_side(self, payload: dict[str, torch.Tensor], device: torch.device
                   ) -> dict[str, torch.Tensor]:
        """What scoring new inputs against a stored member keeps in memory (``serves_new_inputs``)."""
        raise NotImplementedError(f"method {self.name!r} does not serve new inputs")

    def score_features(self, side: dict[str, torch.Tensor], features: torch.Tensor
                       ) -> torch.Tensor:
        """Scores (rows x n_train) of new inputs' features against ``query_side``'s result."""
        raise NotImplementedError(f"method {self.name!r} does not serve new inputs")

    @staticmethod
    def n_train(side: dict[str, torch.Tensor]) -> int:
        """Train rows a query side scores against."""
        return int(next(iter(side.values())).shape[-1])


METHODS: Registry[AttributionMethod] = Registry("method")
register_method = METHODS.register  # class decorator: a method available by its name
method_class = METHODS.lookup  # the registered method called ``name``
