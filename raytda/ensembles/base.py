"""The ensemble-kind interface and its registry.

An ensemble kind says which members a configuration averages, which of the fields D, C,
L and mask_mode it takes, what it needs of a method and of the model, which jobs a
configuration of it needs (:meth:`EnsembleKind.jobs`: its models, feature jobs and Q
jobs) and what it costs in the paper's analytic model (appendix E). The planner and the
evaluation call these hooks and branch on no kind. ``register_ensemble`` adds a kind
from any module; nothing else in raytda names kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.ensembles.fields import FIELD_DEFAULTS, SIZE_FIELDS
from raytda.registry import Registry
from raytda.specs import Member, _check

if TYPE_CHECKING:
    from raytda.core.costs import MeasuredUnits, UnitCosts
    from raytda.core.network import Network
    from raytda.ensembles.spec import Ensemble
    from raytda.plan.evaluate import Evaluate
    from raytda.plan.job import Job, KindJobs
    from raytda.plan.members import QValues
    from raytda.task import Task


class EnsembleKind:
    """One kind of ensemble. Subclass, set ``name``, and override what differs.

    Class attributes:
        name: the kind as written in specs and on the command line.
        takes: which of ``D``, ``C``, ``L``, ``mask_mode`` it uses (others must be unset);
            the sizes among them are :attr:`sizes`.
        series_sizes: of the sizes it takes, those that split its configurations into
            separate lines of a cost plot (a line per value; I and its other sizes vary
            along a line): D by default, so a Dropout Ensemble draws a line per D.
        uses_masks: members are dropout-masked (the model needs dropout sites).
        needs: method capabilities it depends on (``"q"``: TRAK's Q weighting,
            ``"projection"``: per-member projection seeds).
    """

    name: ClassVar[str] = ""
    takes: ClassVar[frozenset[str]] = frozenset()
    uses_masks: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()
    series_sizes: ClassVar[frozenset[str]] = frozenset({"D"})

    @property
    def sizes(self) -> tuple[str, ...]:
        """The size fields it takes (of D, C, L), in the order its label writes them."""
        return tuple(f for f in SIZE_FIELDS if f in self.takes)

    def series(self, values: Mapping[str, Any]) -> str:
        """The cost-plot line of a configuration whose fields are ``values`` (a mapping
        with at least the :meth:`series_fields`): 'dropout D=10', 'lora'."""
        return " ".join([self.name, *(f"{f}={values[f]}" for f in self.series_fields)])

    @property
    def series_fields(self) -> tuple[str, ...]:
        """The sizes that name its cost-plot lines (``series_sizes`` it takes)."""
        return tuple(f for f in self.sizes if f in self.series_sizes)

    def members(self, ens: Ensemble, epochs: tuple[int | None, ...]) -> tuple[Member, ...]:
        """Members whose scores (and Q) are averaged; ``epochs`` are the checkpoints a
        training run keeps, oldest first, ``None`` for its final weights."""
        raise NotImplementedError

    def feature_members(self, ens: Ensemble, epochs: tuple[int | None, ...]
                        ) -> tuple[Member, ...]:
        """Members whose gradient features are used (the score members by default)."""
        return self.members(ens, epochs)

    # ------------------------------------------------------------------ jobs

    def jobs(self, ev: Evaluate) -> KindJobs:
        """Every job configuration ``ev`` needs: its models, further trainings, feature
        jobs and (when the method needs Q) Q jobs. Override the parts below, or this.

        When the features part gives Q from its own pass (``q_in_pass``), a Q member
        whose network, masks and train rows are exactly a feature job's takes its Q from
        that job instead of a QValues job (:meth:`KindJobs.with_q_from_features`;
        every such feature job stores its Q, ``MemberBlock.train_q``): for
        naive, dropout, checkpoint and LoRA members every Q member is its feature
        member; projection-only members share one Q per model, read off the first
        projection's pass; the forward-only dropout kinds' Q members are masked variants
        of unmasked feature members, so they keep their Q jobs."""
        from raytda.plan.job import KindJobs

        models = self.models(ev)
        needs = KindJobs(models=models, adapters=self.adapters(ev, models),
                         features=self.feature_jobs(ev, models),
                         q=self.q_jobs(ev, models) if ev.method.impl.needs_q else ())
        return needs.with_q_from_features() if needs.q else needs

    def models(self, ev: Evaluate) -> tuple[Job, ...]:
        """The I models: the task's checkpoints imported, or trained from scratch."""
        from raytda.plan.models import task_models

        return task_models(ev.task, ev.ensemble.I, ev.base_seed)

    def adapters(self, ev: Evaluate, models: tuple[Job, ...]) -> tuple[Job, ...]:
        """Trainings on top of the models (none by default)."""
        return ()

    def source(self, models: tuple[Job, ...], member: Member) -> Job:
        """The job whose weights member ``member`` is served from."""
        return models[member.model]

    def feature_jobs(self, ev: Evaluate, models: tuple[Job, ...]) -> tuple[Job, ...]:
        """One MemberBlock per feature member (projection seeds dropped when the features
        are exact gradients: they would change nothing but the key), built in train
        shards when too large for memory (:func:`raytda.plan.shards.member_job`)."""
        from dataclasses import replace

        from raytda.plan.members import MemberBlock
        from raytda.plan.shards import member_job

        out = []
        for mem in self.feature_members(ev.ensemble, ev.task.saved_epochs()):
            if ev.method.feature_dim is None:
                mem = replace(mem, projection=0)
            out.append(member_job(ev, MemberBlock(self.source(models, mem), mem, ev.method,
                                                  ev.ensemble.mask_mode)))
        return tuple(out)

    def q_jobs(self, ev: Evaluate, models: tuple[Job, ...]) -> tuple[QValues, ...]:
        """One Q job per distinct (model, checkpoint, mask or adapter) member."""
        from dataclasses import replace

        from raytda.plan.members import QValues

        seen: dict[str, QValues] = {}
        for mem in self.members(ev.ensemble, ev.task.saved_epochs()):
            q = QValues(self.source(models, mem), replace(mem, projection=0),
                        ev.ensemble.mask_mode)
            seen.setdefault(q.key, q)
        return tuple(seen.values())

    def check_task(self, ens: Ensemble, task: Task) -> None:
        """Raise SpecError if ``task`` cannot give what this kind needs (checked before
        any work; ``Sweep.check`` probes the model's dropout sites)."""

    def check_model(self, ens: Ensemble, task: Task, net: Network) -> None:
        """Raise SpecError if the task's model (``net``, probed on a train row) lacks what
        this kind needs: dropout sites for masked members."""
        _check(not self.uses_masks or bool(net.sites),
               f"{ens.label} needs dropout, but task {task.name!r}'s model has no "
               f"nn.Dropout module with p > 0; add one or use another ensemble kind")

    # ------------------------------------------------------------------ costs

    def unit_costs(self, m: MeasuredUnits) -> UnitCosts:
        """Appendix E's units from what the jobs measured: T_Serving is one member from
        scratch (its share of any shared pass, its own serving and scoring, a Q pass);
        T_Serving,Forward-only is one more mask costing a forward-only Q pass."""
        from raytda.core.costs import UnitCosts

        return UnitCosts(train=m.train, serve=m.shared + m.member + m.q,
                         serve_forward_only=m.q, train_lora=m.train_lora)

    def train_time(self, ens: Ensemble, u: UnitCosts) -> float:
        """Appendix E: I x T_train."""
        return ens.I * u.train

    def serve_time(self, ens: Ensemble, u: UnitCosts) -> float:
        """Appendix E: one member serving per feature member."""
        raise NotImplementedError

    def stored_params(self, ens: Ensemble, per_model: int, per_adapter: int = 0) -> int:
        """Parameters the configuration keeps: I models (masks and projection seeds cost
        nothing to store)."""
        return ens.I * per_model

    def label(self, ens: Ensemble) -> str:
        parts = [self.name, f"I={ens.I}"]
        parts += [f"{f}={getattr(ens, f)}" for f in self.sizes]
        if "mask_mode" in self.takes and ens.mask_mode != "fixed":
            parts.append(ens.mask_mode)
        return " ".join(parts)

    def check(self, ens: Ensemble) -> None:
        """Raise SpecError for fields this kind does not take (or takes wrongly)."""
        defaults = FIELD_DEFAULTS
        for f, default in defaults.items():
            if f not in self.takes:
                _check(getattr(ens, f) == default,
                       f"ensemble kind {self.name!r} takes no {f} (got {getattr(ens, f)!r}); "
                       f"it takes {sorted(self.takes | {'I'})}")


ENSEMBLES: Registry[EnsembleKind] = Registry("ensemble kind")
register_ensemble = ENSEMBLES.register  # class decorator: a kind available by its name
ensemble_kind = ENSEMBLES.lookup  # the registered kind called ``name``


def checkpoint_epochs(ens: Ensemble, epochs: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """The last C of a run's kept checkpoints, or a clear error when it keeps fewer."""
    _check(ens.C <= len(epochs),
           f"C={ens.C} checkpoints requested but each training run keeps {len(epochs)}; "
           f"keep more (Recipe.checkpoint_epochs, or more checkpoints per run)")
    return epochs[-ens.C:]
