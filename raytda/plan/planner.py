"""From a sweep spec to a deduplicated, topologically ordered DAG of jobs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from raytda.plan.jobs import Evaluate, Job
from raytda.specs import (
    Ensemble,
    LDSSpec,
    Method,
    Setting,
    Spec,
    SpecError,
    _check,
    check_combination,
)
from raytda.store import ArtifactStore

# Ensemble kinds that only make sense for TRAK (they vary projection seeds or split Q/features).
TRAK_ONLY = ("dropout-forward", "projection-only")


@dataclass(frozen=True)
class SweepSpec(Spec):
    """Settings x methods x ensemble configurations, evaluated with one LDS spec."""

    settings: tuple[Setting, ...]
    methods: tuple[Method, ...] = (Method("trak"),)
    ensembles: tuple[Ensemble, ...] = (Ensemble("naive", 1),)
    lds: LDSSpec = field(default_factory=LDSSpec)
    base_seed: int = 0
    _nested: ClassVar[dict[str, type]] = {"lds": LDSSpec}

    def __post_init__(self) -> None:
        for name in ("settings", "methods", "ensembles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            _check(len(getattr(self, name)) > 0,
                   f"the sweep's {name} list is empty; give at least one")
        for e in self.ensembles:
            for m in self.methods:
                if e.kind in TRAK_ONLY and m.name != "trak":
                    raise SpecError(f"ensemble kind {e.kind!r} is defined for TRAK only, "
                                    f"not {m.name!r}; drop it or sweep TRAK alone")
                for s in self.settings:
                    check_combination(s, m, e)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        known = {"settings", "methods", "ensembles", "lds", "base_seed"}
        unknown = set(d) - known
        _check(not unknown, f"unknown sweep axis/field(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(
            settings=tuple(Setting.from_dict(s) for s in d["settings"]),
            methods=tuple(Method.from_dict(m) for m in d.get("methods", [{"name": "trak"}])),
            ensembles=tuple(Ensemble.from_dict(e) for e in d.get("ensembles", [{}])),
            lds=LDSSpec.from_dict(d.get("lds", {})),
            base_seed=int(d.get("base_seed", 0)),
        )

    def evaluations(self) -> list[Evaluate]:
        return [Evaluate(s, m, e, self.lds, self.base_seed)
                for s in self.settings for m in self.methods for e in self.ensembles]


@dataclass
class Plan:
    """Every job of a sweep once, dependencies first, and which the store already has."""

    jobs: list[Job]
    evaluations: list[Evaluate]
    cached: set[str]

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
        return "\n".join(lines)


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


def make_plan(spec: SweepSpec, store: ArtifactStore | None = None) -> Plan:
    """The sweep's jobs; a cached job's inputs are not needed and are left out."""
    evals = spec.evaluations()
    cached: set[str] = set()

    def is_cached(job: Job) -> bool:
        if store is not None and job.key not in cached and store.has(job.key):
            cached.add(job.key)
        return job.key in cached

    needed: dict[str, Job] = {}
    stack: list[Job] = list(evals)
    while stack:
        job = stack.pop()
        if job.key in needed:
            continue
        needed[job.key] = job
        if not is_cached(job):
            stack.extend(job.deps())
    jobs = [j for j in collect(list(evals)) if j.key in needed]
    return Plan(jobs, evals, cached)
