"""A Tune searcher over a finite set of ensemble configurations that never proposes one twice.

Optuna's samplers work on distributions, not on a finite list: over a space of a few dozen
configurations they soon propose one they proposed before (a reviewer's 4 trials covered
3 configurations). This searcher keeps the list of candidates and the set already claimed
(known from the store before the search, run, or running) and hands Tune only unclaimed
ones:

* with Optuna (``sampler="optuna"``), ask-and-tell on a multi-objective study (maximize
  LDS, minimize the cost): configurations the store already holds enter the study as
  finished trials before the first ask, so the sampler learns from them without running
  them; a proposal that repeats a claimed configuration is told as failed (it carries no
  new information, and a failed trial does not shape the sampler) and Optuna is asked
  again; after ``max_asks`` repeats in a row an unclaimed configuration drawn at random is
  enqueued, so a crowded space still ends;
* without it (``sampler="random"``), uniform draws without replacement.

When every candidate is claimed the searcher answers ``FINISHED`` and Tune stops asking.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Sequence
from typing import Any

from ray.tune.search import Searcher

from raytda.ensembles import Ensemble
from raytda.ensembles.spec import FIELDS
from raytda.specs import SpecError

OBJECTIVE = "lds"


def field_choices(candidates: Sequence[Ensemble]) -> dict[str, dict[str, list]]:
    """kind -> field -> the sorted values the candidates of that kind use, for ``I`` and
    the fields the kind takes (the conditional space)."""
    out: dict[str, dict[str, list]] = {}
    for e in candidates:
        fields = ["I", *(f for f in FIELDS if f in e.kind_class.takes)]
        per_kind = out.setdefault(e.kind, {f: [] for f in fields})
        for f in fields:
            if getattr(e, f) not in per_kind[f]:
                per_kind[f].append(getattr(e, f))
    for per_kind in out.values():
        for values in per_kind.values():
            values.sort()
    return out


def param_name(field: str, kind: str) -> str:
    """Optuna parameter name of ``field`` under ``kind``: one per kind, since a parameter
    name must keep one distribution for the whole study and kinds offer different values."""
    return f"{field}_{kind}"


def define_space(trial: Any, choices: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Optuna define-by-run space: the kind, then only the fields that kind takes and the
    grid varies; returns the sampled configuration as ``{"kind": ..., field: value}``."""
    kind = trial.suggest_categorical("kind", list(choices))
    config: dict[str, Any] = {"kind": kind}
    for field, values in choices[kind].items():
        config[field] = (trial.suggest_categorical(param_name(field, kind), values)
                         if len(values) > 1 else values[0])
    return config


def ensemble_config(e: Ensemble) -> dict[str, Any]:
    """A configuration as Tune passes it to a trial: the kind, I and the fields it takes."""
    return {"kind": e.kind, "I": e.I,
            **{f: getattr(e, f) for f in FIELDS if f in e.kind_class.takes}}


def config_ensemble(config: dict[str, Any]) -> Ensemble:
    """Inverse of :func:`ensemble_config`."""
    return Ensemble(**{k: v for k, v in config.items() if k == "kind" or k in ("I", *FIELDS)})


class DistinctSearcher(Searcher):
    """Proposes each of ``candidates`` at most once, skipping those in ``known``.

    Args:
        candidates: the configurations to search.
        known: results the store already holds, configuration -> (LDS, cost); they are
            never proposed and, with Optuna, seed its study.
        cost: the cost column minimized next to maximizing LDS.
        sampler: 'optuna' (multi-objective TPE, ask-and-tell) or 'random'.
        seed: seed of the sampler and of the random fallback.
        max_asks: Optuna proposals that repeat a claimed configuration before one is drawn
            at random from the unclaimed ones.
    """

    def __init__(self, candidates: Sequence[Ensemble], known: dict[Ensemble, tuple[float, float]],
                 cost: str, sampler: str = "optuna", seed: int = 0, max_asks: int = 20) -> None:
        super().__init__(metric=[OBJECTIVE, cost], mode=["max", "min"])
        if sampler not in ("optuna", "random"):
            raise SpecError(f"unknown sampler {sampler!r}; use 'optuna' or 'random'")
        self.candidates = list(dict.fromkeys(candidates))
        self.cost = cost
        self.sampler = sampler
        self.max_asks = max_asks
        self.claimed: set[Ensemble] = set(known) & set(self.candidates)
        self.results: dict[Ensemble, tuple[float, float]] = {
            e: v for e, v in known.items() if e in self.claimed}
        self.pending: dict[str, tuple[Any, Ensemble]] = {}  # trial id -> (Optuna trial, config)
        self.repeats = 0  # proposals answered with "already claimed" (for the report)
        self._rng = random.Random(seed)
        self._choices = field_choices(self.candidates)
        self._study = self._make_study(seed) if sampler == "optuna" else None

    # ------------------------------------------------------------------ Optuna

    def _make_study(self, seed: int) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        for e, values in self.results.items():
            if all(math.isfinite(v) for v in values):
                study.add_trial(optuna.trial.create_trial(
                    params=self._params(e), distributions=self._distributions(e),
                    values=list(values)))
        return study

    def _params(self, e: Ensemble) -> dict[str, Any]:
        return {"kind": e.kind, **{param_name(f, e.kind): getattr(e, f)
                                   for f, v in self._choices[e.kind].items() if len(v) > 1}}

    def _distributions(self, e: Ensemble) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        return {"kind": CategoricalDistribution(list(self._choices)),
                **{param_name(f, e.kind): CategoricalDistribution(v)
                   for f, v in self._choices[e.kind].items() if len(v) > 1}}

    def _ask_optuna(self) -> tuple[Any, Ensemble] | None:
        from optuna.trial import TrialState

        for _ in range(self.max_asks):
            trial = self._study.ask()
            e = config_ensemble(define_space(trial, self._choices))
            if e in self.candidates and e not in self.claimed:
                return trial, e
            self.repeats += 1
            self._study.tell(trial, state=TrialState.FAIL)
        rest = [e for e in self.candidates if e not in self.claimed]
        if not rest:
            return None
        e = self._rng.choice(rest)
        self._study.enqueue_trial(self._params(e))
        trial = self._study.ask()
        define_space(trial, self._choices)  # records the enqueued values on the trial
        return trial, e

    # ------------------------------------------------------------------ Tune's interface

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if all(e in self.claimed for e in self.candidates):
            return Searcher.FINISHED
        if self._study is not None:
            found = self._ask_optuna()
            if found is None:
                return Searcher.FINISHED
            trial, e = found
        else:
            trial, e = None, self._rng.choice([e for e in self.candidates
                                               if e not in self.claimed])
        self.claimed.add(e)
        self.pending[trial_id] = (trial, e)
        return ensemble_config(e)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        trial, e = self.pending.pop(trial_id, (None, None))
        if e is None:
            return
        values = None
        if result and not error and OBJECTIVE in result and self.cost in result:
            values = (float(result[OBJECTIVE]), float(result[self.cost]))
            self.results[e] = values
        if trial is not None:
            from optuna.trial import TrialState

            if values is not None and all(math.isfinite(v) for v in values):
                self._study.tell(trial, list(values))
            else:
                self._study.tell(trial, state=TrialState.FAIL)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
