"""The one schema of raytda's built-in Tasks: a settings dict per scale.

A :class:`BuiltinTask` subclass states its settings as plain dicts: ``CPU`` (a scale that
runs on a laptop in minutes; each subclass says in its docstring what is reduced and why)
and ``FULL`` (the paper's appendix B scale). A task whose one scale is the paper's, or that
has no paper counterpart, sets ``FULL = CPU``. ``full=True`` picks ``FULL``, and any
setting can be overridden by name (``n_train``, ``n_test``, ``seed``, ``epochs``, ``lr``,
``dropout``, model sizes, ...), which is what ``get_task(name, data_dir, **overrides)``
and ``raytda sweep --setting NAME --n-train ...`` pass on. The subclass builds its model
(``build_model``), reads its data (``load``) and may change f and Q (``output``).

The settings (except where the data lives) are the Task's ``config()``, so they are part of
every artifact key: a CPU-scale model is never mistaken for a paper-scale one. Training
settings go into the :class:`~raytda.specs.Recipe` (also keyed); every Recipe field may be
overridden, and ``checkpoint_epochs`` follow ``epochs`` unless given. Data is loaded
lazily and once per process, so constructing a Task (e.g. for planning) reads no file.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, ClassVar

from raytda.specs import Recipe, SpecError
from raytda.store.uri import absolute_location
from raytda.task import Task

#: settings that configure the Recipe rather than the model or the data
RECIPE_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Recipe))


def even_epochs(epochs: int, n: int = 5) -> tuple[int, ...]:
    """The epochs at 1/n, 2/n, ... (n-1)/n of a run: the checkpoints every built-in keeps
    besides the last (four, for the checkpoint ensembles of appendix F.2)."""
    return tuple(sorted({max(1, round(epochs * k / n)) for k in range(1, n)}))


class BuiltinTask(Task):
    """A built-in Task declared by its settings dicts ``CPU`` and ``FULL``.

    Args:
        data_dir: the data set's directory (None: ``$RAYTDA_DATA/<DATA_NAME>``, else
            ``~/raytda-data/<DATA_NAME>``; resolved when the data is first read). Tasks
            whose data needs no files (``DATA_NAME = ""``) ignore it.
        full: the paper's scale (``FULL``) instead of the CPU one.
        **overrides: any key of the settings or any Recipe field (an unknown key is a
            SpecError listing the valid ones).
    """

    #: directory name under $RAYTDA_DATA / ~/raytda-data ("" for data that needs no files)
    DATA_NAME: ClassVar[str] = ""
    CPU: ClassVar[dict[str, Any]] = {}
    FULL: ClassVar[dict[str, Any]] = {}

    def __init__(self, data_dir: str | None = None, full: bool = False, **overrides: Any) -> None:
        base = self.FULL if full else self.CPU
        valid = {*base, *RECIPE_KEYS}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise SpecError(f"unknown override(s) {unknown} for task {self.name!r}; valid: "
                            f"{sorted(valid)}")
        self.full = bool(full)
        # Absolute where the Task is built (the driver): workers rebuild it from this.
        self.data_dir = None if data_dir is None else absolute_location(str(data_dir))
        self.settings: dict[str, Any] = {**base, **overrides}
        self._check_settings()
        self.recipe = self.make_recipe()

    def _check_settings(self) -> None:
        """The settings several built-ins share must make sense (one line each if not)."""
        s = self.settings
        if "n_train" in s and not (isinstance(s["n_train"], int) and s["n_train"] >= 2):
            raise SpecError(f"n_train must be an integer >= 2, got {s['n_train']!r}")
        if "n_test" in s and not (isinstance(s["n_test"], int) and s["n_test"] >= 1):
            raise SpecError(f"n_test must be an integer >= 1, got {s['n_test']!r}")
        if "dropout" in s and not 0.0 <= s["dropout"] < 1.0:
            raise SpecError(f"dropout rate must be in [0, 1), got {s['dropout']}")
        if s.get("normalize") is not None:
            norm = s["normalize"]
            if len(norm) != 2 or not float(norm[1]) > 0:
                raise SpecError(f"normalize must be (mean, std) with std > 0, or None for "
                                f"pixels in [0, 1]; got {norm!r}")
            s["normalize"] = (float(norm[0]), float(norm[1]))

    def make_recipe(self) -> Recipe:
        """The Recipe from the settings; unless given, it keeps four evenly spaced
        checkpoints (:func:`even_epochs`)."""
        kw = {k: self.settings[k] for k in RECIPE_KEYS if k in self.settings}
        kw.setdefault("checkpoint_epochs", even_epochs(kw["epochs"]))
        return Recipe(**kw)

    def config(self) -> dict[str, Any]:
        # The recipe is keyed through Task.recipe; every other setting is keyed here.
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()
                if k not in RECIPE_KEYS}

    def with_data_dir(self, data_dir: str | None) -> BuiltinTask:
        """The same Task reading its data from ``data_dir`` (same key: where files live is
        not content)."""
        return type(self)(data_dir=data_dir, full=self.full, **self._overrides())

    def _overrides(self) -> dict[str, Any]:
        base = self.FULL if self.full else self.CPU
        return {k: v for k, v in self.settings.items() if k not in base or base[k] != v}

    def root(self) -> str | None:
        """The resolved data directory (a DataError, one line, when it does not exist);
        None for data that needs no files."""
        if not self.DATA_NAME:
            return None
        from raytda.data.location import data_dir

        return str(data_dir(self.DATA_NAME, self.data_dir))

    def load(self) -> tuple[Any, Any]:
        """(train, test) data; override. Called once per process per key and root."""
        raise NotImplementedError(f"{type(self).__name__} must define load()")

    def _data(self) -> tuple[Any, Any]:
        return _cached_load(self, self.declared_key, self.root())

    def train_data(self) -> Any:
        return self._data()[0]

    def test_data(self) -> Any:
        return self._data()[1]

    def __reduce__(self):  # pickles (for Ray workers) as its constructor arguments
        return (_rebuild, (type(self), self.data_dir, self.full, self._overrides()),
                self._identity_state())


class PaperSetting:
    """Mixin of the built-ins that are the paper's settings: methods project to the k the
    paper states (2048) with dense features and TRAK's own ridge unless the Method says
    otherwise, so the paper's protocol (and the keys of stores made before these defaults
    existed) hold."""

    default_proj_dim: ClassVar[int | None] = 2048
    default_features: ClassVar[str | None] = "dense"
    default_ridge_scale: ClassVar[float | None] = 0.0  # TRAK's own ridge, as the paper


def _rebuild(cls: type[BuiltinTask], data_dir: str | None, full: bool,
             overrides: dict[str, Any]) -> BuiltinTask:
    return cls(data_dir=data_dir, full=full, **overrides)


#: (class, key, root) -> (train, test); a few entries (a sweep touches one or two Tasks)
_LOADED: OrderedDict[tuple[str, str, str | None], tuple[Any, Any]] = OrderedDict()
_MAX_LOADED = 4


def _cached_load(task: BuiltinTask, key: str, root: str | None) -> tuple[Any, Any]:
    k = (type(task).__qualname__, key, root)
    if k not in _LOADED:
        _LOADED[k] = task.load()
        while len(_LOADED) > _MAX_LOADED:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(k)
    return _LOADED[k]
