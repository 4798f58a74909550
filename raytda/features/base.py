"""The gradient-features interface and its registry.

A :class:`GradientFeatures` is a small frozen spec (a name and its options) that enters
the keys of every payload made with it. For one member (a network, its projection seed)
it builds a :class:`Featurizer`: a map from samples to rows of features, exact gradients
(``k=None``, when the part is ``exact``) or k-dimensional projections of them. Methods
ask for features and never see how they were made, so a new way to get them is one new
file registered with :func:`register_features`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.registry import Registry
from raytda.specs import SpecError, _check, derive_seed

if TYPE_CHECKING:
    import torch

    from raytda.core.args import ComputeArgs
    from raytda.core.masks import MaskSpec
    from raytda.core.network import Network
    from raytda.core.outputs import ModelOutput
    from raytda.data.samples import Samples
    from raytda.plan.job import Job
    from raytda.plan.members import MemberBlock

#: a slice of rows, or a tensor of row indices in any order
Rows = "slice | torch.Tensor"


class Featurizer:
    """One member's features: ``dim`` numbers per sample, in float32 on the CPU.

    Subclasses implement ``batches``; ``features`` gathers them in row order. What a
    featurizer keeps between calls (a projection matrix, say) is built by ``prepare`` or
    on first use, counted by ``held_bytes`` and dropped by ``release``.
    """

    dim: int

    def batches(self, samples: Samples, mask: MaskSpec | None, split: str, offset: int = 0
                ) -> Iterator[tuple[Rows, torch.Tensor]]:
        """Yield (rows of ``samples``, their features) until every row is covered.

        ``offset`` is the split row number of ``samples``' row 0: per-sample dropout
        masks are keyed by (split, row), so a sample's features never depend on its batch.
        """
        raise NotImplementedError

    def features(self, samples: Samples, mask: MaskSpec | None, split: str, offset: int = 0
                 ) -> torch.Tensor:
        """(len(samples), dim) features in row order."""
        import torch

        out = torch.empty(samples.n, self.dim, dtype=torch.float32)
        for rows, f in self.batches(samples, mask, split, offset):
            out[rows] = f.float().cpu()
        return out

    def batches_with_q(self, samples: Samples, mask: MaskSpec | None, split: str,
                       offset: int = 0) -> Iterator[tuple[Rows, torch.Tensor, torch.Tensor]]:
        """Yield (rows, features, Q) where Q = ``output.q(logits, y)`` comes from the
        same forward that featurizes (no second pass). Only featurizers of a part whose
        ``q_in_pass`` is True implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not give Q from its pass")

    def features_and_q(self, samples: Samples, mask: MaskSpec | None, split: str,
                       offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(samples), dim) features and (len(samples),) Q in row order, from one pass
        (``batches_with_q``): Q equals a plain forward's ``output.q`` up to float
        rounding, under the same network and masks."""
        import torch

        out = torch.empty(samples.n, self.dim, dtype=torch.float32)
        q = torch.empty(samples.n, dtype=torch.float32)
        for rows, f, qb in self.batches_with_q(samples, mask, split, offset):
            out[rows] = f.float().cpu()
            q[rows] = qb.float().cpu()
        return out, q

    def prepare(self) -> None:
        """Build now what later calls reuse (no-op by default)."""

    def release(self) -> None:
        """Drop what ``prepare`` built (it is rebuilt on demand, with the same values)."""

    @property
    def held_bytes(self) -> int:
        """Bytes this featurizer keeps between calls."""
        return 0

    @property
    def prepared_bytes(self) -> int:
        """Bytes ``prepare`` would hold (0 when nothing is kept between calls)."""
        return 0

    def reused_s(self) -> float:
        """Build time of parts reused from earlier work of this process; serving costs
        charge it as if built here, so a cost does not depend on what ran before."""
        return 0.0

    def describe(self) -> dict[str, Any]:
        """What results should state about these features (JSON values)."""
        return {}


@dataclasses.dataclass(frozen=True)
class GradientFeatures:
    """A way to get gradient features. Subclass as a frozen dataclass whose fields are
    its options, set ``name``, register it, and implement ``featurizer``.

    Class attributes:
        name: as written in a Method's ``features`` field and on the command line.
        exact: it can give the exact per-sample gradients (``k=None``); methods that
            need them (IF's curvature products in parameter space) require this.
        revision: bumped when its numbers change, so stored payloads are not reused.
        q_in_pass: its featurizers run the model's forward anyway and give TRAK's Q from
            it (``Featurizer.features_and_q``), so a member whose Q is its own needs no
            separate Q pass (the planner then plans none).
    """

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    revision: ClassVar[int] = 0
    q_in_pass: ClassVar[bool] = False

    def featurizer(self, net: Network, k: int | None, seed: int, args: ComputeArgs,
                   output: ModelOutput, data: Any = None, keep: bool = True) -> Featurizer:
        """The featurizer of one member: ``k`` dimensions (None: exact gradients), drawn
        from ``seed``; ``data`` (the Task's data) lets a part adapt to the train inputs;
        ``keep``: reuse what this process built for earlier jobs (jobs) or not (the
        Attributor manages its own memory)."""
        raise NotImplementedError

    def member_jobs(self, block: MemberBlock) -> dict[str, Job]:
        """Jobs whose artifacts this part reads to featurize ``block``'s member, by name
        (a projection fitted to the member's data, say): shared artifacts keyed by what
        they depend on, made once for every configuration that serves the member. A part
        that declares any is given their tensors as ``featurizer(..., inputs=...)``.
        Default: none."""
        return {}

    def features_for_seeds(self, net: Network, data: Any, seeds: list[int], k: int,
                           args: ComputeArgs, output: ModelOutput
                           ) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        """Train and test features (``[{"train": (n, k), "test": (m, k)}]``, one per seed)
        of one unmasked network under several projection seeds, and the time split
        (``grad_s``: work shared by the seeds; ``project_s``: one entry per seed).

        Default: one featurizer per seed, nothing shared. Parts that can compute the
        gradients once for every seed override it."""
        from raytda.core.costs import stopwatch

        feats, project_s = [], []
        for seed in seeds:
            spent = stopwatch(args.device)
            fz = self.featurizer(net, k, seed, args, output, data, keep=False)
            feats.append({"train": fz.features(data.train, None, "train"),
                          "test": fz.features(data.test, None, "test")})
            project_s.append(spent())
        return feats, {"grad_s": 0.0, "project_s": project_s, "proj_dim": k}

    def projection_seed(self, seed: int) -> int:
        """The seed a member's projection is drawn from, given the member's own: that
        seed itself (:class:`Redrawable` parts can draw others)."""
        return seed

    def redrawn(self) -> bool:
        """Whether ``projection_seed`` moves members off their own seed."""
        return False

    def options(self) -> dict[str, Any]:
        """The options that make these features what they are (keys and spec strings)."""
        return dataclasses.asdict(self)

    def hashed(self) -> dict[str, Any]:
        """What enters payload keys: the name, the revision when set, and the options."""
        out: dict[str, Any] = {"name": self.name, **self.options()}
        if self.revision:
            out["revision"] = self.revision
        return out

    def spec_string(self) -> str:
        """``name`` or ``name:opt=value,...`` (what :func:`features_from` reads)."""
        opts = self.options()
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")


@dataclasses.dataclass(frozen=True)
class Redrawable(GradientFeatures):
    """A part whose random projection can be drawn again.

    ``draw`` d > 0 gives every member a projection independent of the default one (its
    seed derived from the member's and d), the same in every configuration that serves
    the member. Scoring one configuration under a few draws measures how much of a
    result is the luck of one projection, which no other knob isolates: the models,
    masks and LDS models stay the same. ``draw=0`` is the member's own seed and stays
    out of keys and spec strings, so payloads stored before the option existed are
    still found."""

    draw: int = 0

    def __post_init__(self) -> None:
        _check(isinstance(self.draw, int) and self.draw >= 0,
               f"{self.name} features: draw must be an integer >= 0, got {self.draw!r}")

    def projection_seed(self, seed: int) -> int:
        return derive_seed("features-draw", seed, self.draw) if self.draw else seed

    def redrawn(self) -> bool:
        return self.draw > 0

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if not self.draw:
            del opts["draw"]
        return opts


FEATURES: Registry[type[GradientFeatures]] = Registry("gradient features")


def register_features(cls: type[GradientFeatures]) -> type[GradientFeatures]:
    """Class decorator: the features part is available by its ``name``."""
    _check(bool(getattr(cls, "name", "")),
           f"{cls.__name__} needs a non-empty class attribute 'name'")
    FEATURES[cls.name] = cls
    return cls


def features_from(spec: str | dict[str, Any] | GradientFeatures) -> GradientFeatures:
    """A GradientFeatures from ``"dense"``, ``"name:opt=value,..."``, a mapping
    ``{"name": ..., **options}`` or an instance."""
    if isinstance(spec, GradientFeatures):
        return spec
    if isinstance(spec, dict):
        opts = dict(spec)
        name = opts.pop("name", None)
    else:
        _check(isinstance(spec, str) and bool(spec),
               f"gradient features are a name like 'dense', got {spec!r}")
        name, _, rest = spec.partition(":")
        opts = {}
        for item in filter(None, rest.split(",")):
            k, eq, v = item.partition("=")
            _check(bool(eq), f"gradient features {spec!r}: option {item!r} is not key=value")
            opts[k.strip()] = _value(v.strip())
    cls = FEATURES.lookup(str(name))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(opts) - known)
    _check(not unknown, f"gradient features {name!r} take no option(s) {unknown}; "
                        f"they take {sorted(known) or 'none'}")
    try:
        return cls(**opts)
    except (TypeError, ValueError) as e:
        raise SpecError(f"gradient features {spec!r}: {e}") from None


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text
