"""From a sweep spec to a deduplicated, topologically ordered DAG of jobs.

Planning only reads the store: a job counts as cached when its record passes its checksum,
its payload has the recorded size, its parts are there (``Job.complete``) and every job it
depends on counts as cached too, so a result whose inputs are gone or broken is computed
again. What a run must clear first (an incomplete artifact, or one to be recomputed) is
listed in ``Plan.stale`` and removed by :func:`clear_stale` when the run starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raytda.ensembles import Ensemble
from raytda.ground_truth import GroundTruth
from raytda.methods import Method
from raytda.plan.evaluate import Evaluate, Truth
from raytda.plan.job import Job
from raytda.specs import LDSSpec, SpecError, _check
from raytda.store import ArtifactStore

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.task import Task

log = logging.getLogger(__name__)


def pair_problem(method: Method, ensemble: Ensemble) -> str | None:
    """Why this method cannot be combined with this ensemble kind (None: it can)."""
    missing = ensemble.kind_class.needs - method.impl.capabilities
    if not missing:
        return None
    what = {"q": "TRAK's Q weighting", "projection": "per-member random projections"}
    return (f"ensemble kind {ensemble.kind!r} needs "
            f"{', '.join(what.get(m, m) for m in sorted(missing))}, which method "
            f"{method.name!r} does not have")


def check_combination(task: Task, method: Method, ensemble: Ensemble, lds: Truth) -> None:
    """Raise SpecError if a (task, method, ensemble) triple cannot be evaluated; only what
    is known without building the model (``Sweep.check`` probes the model itself)."""
    kind, impl = ensemble.kind_class, method.impl
    problem = pair_problem(method, ensemble)
    if problem:
        raise SpecError(f"{problem}; drop the pair or sweep e.g. TRAK alone with it")
    impl.check(method, task)
    imported = task.checkpoints() is not None
    kind.check_task(ensemble, task)
    if imported:
        runs = task.checkpoints()
        _check(ensemble.I <= len(runs),
               f"{ensemble.label} needs I={ensemble.I} models but task {task.name!r} gives "
               f"{len(runs)} training run(s) of checkpoints")
    elif not task.trains:
        raise SpecError(f"task {task.name!r} has no recipe, no train() and no checkpoints(): "
                        f"raytda cannot get its models; give one of the three")
    ensemble.members(task.saved_epochs())  # C larger than what a run keeps fails here
    if isinstance(lds, LDSSpec) and not task.trains:
        raise SpecError(f"LDS retrains the model on {lds.m} subsets, but task {task.name!r} "
                        f"cannot train (no recipe or train()); pass ground truth you have "
                        f"(GroundTruth) or lds=None for attribution only")


#: Environment variable that raises :data:`DEFAULT_MAX_JOBS` for a sweep that means it.
MAX_JOBS_ENV = "RAYTDA_MAX_JOBS"

#: Most jobs a sweep may plan unless ``RAYTDA_MAX_JOBS`` says more. `raytda plan` of
#: dropout D=10 on digits-mlp took 34 s for I=500 (10,551 jobs) and 50 s for I=2000
#: (42,051 jobs) on a shared 2-core CPU: about 0.5 ms a job beyond a fixed start, and
#: every job is at least one model trained or one artifact stored. 100,000 jobs still
#: plan in about a minute yet hold far more work than the paper's grids; an I of 10^20 is
#: refused before anything is enumerated.
DEFAULT_MAX_JOBS = 100_000


def max_jobs() -> int:
    """The job limit: ``$RAYTDA_MAX_JOBS`` when set, else :data:`DEFAULT_MAX_JOBS`."""
    import os

    text = os.environ.get(MAX_JOBS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_JOBS
    try:
        value = int(text)
    except ValueError:
        value = 0
    _check(value >= 1, f"{MAX_JOBS_ENV}={text!r} is not a positive integer; unset it or give "
                       f"the most jobs a sweep may plan, e.g. {MAX_JOBS_ENV}=200000")
    return value


def job_bound(method: Method, ensemble: Ensemble) -> int:
    """An upper bound on the jobs one configuration adds, from its sizes alone (nothing is
    enumerated, so any size is counted in constant time): its I models and I x L adapters,
    one feature job (and one Q job when the method needs Q) per member, at most
    I x D x C x max(L, 1) members, and the evaluation."""
    members = ensemble.I * ensemble.D * ensemble.C * max(ensemble.L, 1)
    return (ensemble.I * (1 + ensemble.L) + members * (2 if method.impl.needs_q else 1)
            + 1)


def check_size(tasks: tuple[Task, ...], pairs: list[tuple[Method, Ensemble]],
               lds: Truth) -> None:
    """Refuse, in one line, a sweep too large to plan (see :data:`DEFAULT_MAX_JOBS`),
    before anything enumerates its members."""
    limit = max_jobs()
    per_pair = [(job_bound(m, e), m, e) for m, e in pairs]
    lds_models = lds.m * lds.models_per_subset if isinstance(lds, LDSSpec) else 0
    total = len(tasks) * (sum(n for n, _, _ in per_pair) + lds_models)
    if total <= limit:
        return
    n, m, e = max(per_pair, key=lambda t: t[0])
    biggest = (f"{lds.m} LDS subsets x {lds.models_per_subset} model(s) alone: "
               f"{lds_models:,}" if lds_models > n else f"{m.name} x {e.label} alone: {n:,}")
    raise SpecError(f"the sweep would plan up to {total:,} jobs ({biggest}), more than the "
                    f"limit of {limit:,}; make the grid smaller, or if you mean it, raise the "
                    f"limit with {MAX_JOBS_ENV}={total}")


@dataclass(frozen=True)
class SweepSpec:
    """Configurations evaluated against one ground truth: an LDSSpec (retrain on random
    subsets), a GroundTruth the user has, or None (scores and costs only).

    By default the grid tasks x methods x ensembles, without the (method, ensemble) pairs
    that cannot run together (each is logged once, in ``skipped``); or, when
    ``configurations`` is given, exactly those (method, ensemble) pairs for every task
    (then ``methods`` and ``ensembles`` list what they use). A pair asked for explicitly
    that cannot run is an error.
    """

    tasks: tuple[Task, ...]
    methods: tuple[Method, ...] = (Method("trak"),)
    ensembles: tuple[Ensemble, ...] = (Ensemble("naive", 1),)
    lds: Truth = field(default_factory=LDSSpec)
    base_seed: int = 0
    configurations: tuple[tuple[Method, Ensemble], ...] = ()
    skipped: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        pairs = tuple((m, e) for m, e in self.configurations)
        object.__setattr__(self, "configurations", pairs)
        if pairs:
            object.__setattr__(self, "methods", tuple(dict.fromkeys(m for m, _ in pairs)))
            object.__setattr__(self, "ensembles", tuple(dict.fromkeys(e for _, e in pairs)))
        for name in ("tasks", "methods", "ensembles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            _check(len(getattr(self, name)) > 0,
                   f"the sweep's {name} list is empty; give at least one")
        _check(self.lds is None or isinstance(self.lds, (LDSSpec, GroundTruth)),
               f"lds must be an LDSSpec, a GroundTruth or None, got {type(self.lds).__name__}")
        skipped = []
        if not pairs:
            for m in self.methods:
                for e in self.ensembles:
                    why = pair_problem(m, e)
                    if why:
                        skipped.append(f"{m.name} x {e.label}: {why}")
            _check(len(skipped) < len(self.methods) * len(self.ensembles),
                   f"no method of the sweep runs with any of its ensembles ({skipped[0]})"
                   if skipped else "")
            for line in skipped:
                log.warning("skipping %s", line)
        object.__setattr__(self, "skipped", tuple(skipped))
        check_size(self.tasks, self.pairs(), self.lds)
        for t in self.tasks:
            _ = t.declared_key  # a Task without a name fails here, before its data is read
            for m, e in self.pairs():
                check_combination(t, m, e, self.lds)

    def pairs(self) -> list[tuple[Method, Ensemble]]:
        """The (method, ensemble) configurations of every task, in sweep order."""
        if self.configurations:
            return list(self.configurations)
        return [(m, e) for m in self.methods for e in self.ensembles
                if pair_problem(m, e) is None]

    def replace(self, **changes) -> SweepSpec:
        """A copy with some fields changed (validated again)."""
        import dataclasses

        return dataclasses.replace(self, **changes)

    def evaluations(self, compute: ComputeArgs | None = None) -> list[Evaluate]:
        """One Evaluate per configuration; ``compute`` (how the sweep runs) sets when
        members' train sides are sharded (:mod:`raytda.plan.shards`; never in a key)."""
        from raytda.plan.shards import ShardRule

        rule = None if compute is None else ShardRule.of(compute)
        return [Evaluate(t, m, e, self.lds, self.base_seed, rule)
                for t in self.tasks for m, e in self.pairs()]


@dataclass
class Plan:
    """Every job of a sweep once, dependencies first, and which the store already has."""

    jobs: list[Job]
    evaluations: list[Evaluate]
    cached: set[str]
    stale: list[str] = field(default_factory=list)  # in the store, but to be rebuilt

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if j.key not in self.cached]

    def counts(self) -> dict[str, tuple[int, int]]:
        """kind -> (total, to run)."""
        total = Counter(j.kind for j in self.jobs)
        todo = Counter(j.kind for j in self.todo)
        return {k: (total[k], todo[k]) for k in total}

    def summary(self) -> str:
        lines = [f"{'job kind':<10} {'total':>6} {'cached':>7} {'to run':>7}"]
        for kind, (tot, run) in sorted(self.counts().items()):
            lines.append(f"{kind:<10} {tot:>6} {tot - run:>7} {run:>7}")
        lines.append(f"{len(self.evaluations)} configurations")
        return "\n".join([*lines, *self.choices()])

    def choices(self) -> list[str]:
        """One line per (task, method) whose k or features were chosen per Task
        (``Method.resolved``): what they resolved to and why."""
        seen: dict[tuple[str, str], str] = {}
        for ev in self.evaluations:
            m = ev.method
            if m.chosen:
                seen.setdefault((ev.task.name, m.label),
                                f"{ev.task.name}: {m.label} uses " + ", ".join(m.chosen))
        return list(seen.values())


def collect(roots: list[Job]) -> list[Job]:
    """Unique jobs reachable from ``roots`` in dependency order (depth-first post-order)."""
    order: list[Job] = []
    seen: set[str] = set()
    stack: list[tuple[Job, bool]] = [(j, False) for j in reversed(roots)]
    while stack:
        job, expanded = stack.pop()
        if expanded:
            if job.key not in seen:
                seen.add(job.key)
                order.append(job)
            continue
        if job.key in seen:
            continue
        stack.append((job, True))
        stack.extend((d, False) for d in reversed(job.deps()) if d.key not in seen)
    return order


def make_plan(spec: SweepSpec, store: ArtifactStore | None = None,
              compute: ComputeArgs | None = None) -> Plan:
    """The sweep's jobs; a cached job's inputs are not needed and are left out. Reads the
    store, never changes it. ``compute``: see ``SweepSpec.evaluations``."""
    evals = spec.evaluations(compute)
    verdict: dict[str, bool] = {}  # key -> cached
    stale: list[str] = []

    def is_cached(job: Job) -> bool:
        # Post-order over the DAG with an explicit stack (sweeps nest deep enough to
        # make recursion a risk): a job is cached when it and all its inputs are.
        stack: list[tuple[Job, bool]] = [(job, False)]
        while stack:
            j, expanded = stack.pop()
            if j.key in verdict:
                continue
            if not expanded:
                stack.append((j, True))
                stack.extend((d, False) for d in j.deps() if d.key not in verdict)
                continue
            present = store.problem(j.key)
            ok = present is None and j.complete(store)
            if ok and not all(verdict[d.key] for d in j.deps()):
                ok = False  # made from inputs that are gone or broken: made again
            if not ok and present != "missing":
                stale.append(j.key)
            verdict[j.key] = ok
        return verdict[job.key]

    cached: set[str] = set()
    needed: dict[str, Job] = {}
    stack: list[Job] = list(evals)
    while stack:
        job = stack.pop()
        if job.key in needed:
            continue
        needed[job.key] = job
        if store is not None and is_cached(job):
            cached.add(job.key)
        else:
            stack.extend(job.deps())
    jobs = [j for j in collect(list(evals)) if j.key in needed]
    return Plan(jobs, evals, cached, [k for k in stale if k in needed])


def clear_stale(plan: Plan, store: ArtifactStore) -> None:
    """Before a run: remove what the plan rebuilds but the store still holds (incomplete
    artifacts, and those whose inputs are gone), and temp files of writers that died."""
    from raytda.store.lease import live_leases

    busy = {k for k, _ in live_leases(store)} if plan.stale else set()
    gone = [k for k in plan.stale if k not in busy]  # a live sweep is rewriting the rest
    for key in gone:
        store.delete(key)
    if gone:
        log.warning("removed %d incomplete or outdated artifact(s) before the run; they are "
                    "rebuilt: %s", len(gone), ", ".join(gone[:5]) + (" ..." if len(gone) > 5
                                                                     else ""))
    temps = store.sweep_temp()
    if temps:
        log.warning("removed %d temp file(s) left by writers that died", len(temps))
