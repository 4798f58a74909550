"""Shared plumbing of the built-in Tasks that come in two sizes: the paper's and a CPU one.

A :class:`ScaledTask` subclass states its settings twice, as ``FULL`` (the paper's
appendix B scale) and ``CPU`` (a reduction that runs on a laptop in minutes; each subclass
says in its docstring what is reduced and why). ``full=True`` picks the first, and any
setting can be overridden by name (``n_train``, ``n_test``, ``epochs``, ``lr``, model
sizes, ...), which is what ``get_task(name, data_dir, **overrides)`` and
``raytda sweep --setting NAME --n-train ...`` pass on.

The settings (except where the data lives) are the Task's ``config()``, so they are part of
every artifact key: a CPU-scale model is never mistaken for a paper-scale one. Training
settings go into the :class:`~raytda.specs.Recipe` (also keyed). Data is loaded lazily and
once per process, so constructing a Task (e.g. for planning) reads no file.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

from raytda.specs import Recipe, SpecError
from raytda.task import Task

#: settings that configure the Recipe rather than the model or the data
RECIPE_KEYS = ("optimizer", "lr", "momentum", "betas", "batch_size", "epochs")


class ScaledTask(Task):
    """A built-in Task with a paper scale (``FULL``) and a CPU scale (``CPU``).

    Args:
        data_dir: the data set's directory (None: ``$RAYTDA_DATA/<DATA_NAME>``, else
            ``~/raytda-data/<DATA_NAME>``; resolved when the data is first read).
        full: the paper's scale instead of the CPU one.
        **overrides: any key of ``CPU`` / ``FULL`` (an unknown key is a SpecError).
    """

    #: directory name under $RAYTDA_DATA / ~/raytda-data
    DATA_NAME: ClassVar[str] = ""
    CPU: ClassVar[dict[str, Any]] = {}
    FULL: ClassVar[dict[str, Any]] = {}

    def __init__(self, data_dir: str | None = None, full: bool = False, **overrides: Any) -> None:
        base = self.FULL if full else self.CPU
        unknown = sorted(set(overrides) - set(base))
        if unknown:
            raise SpecError(f"unknown override(s) {unknown} for task {self.name!r}; valid: "
                            f"{sorted(base)}")
        self.full = bool(full)
        self.data_dir = None if data_dir is None else str(data_dir)
        self.settings: dict[str, Any] = {**base, **overrides}
        self.recipe = self.make_recipe()

    def make_recipe(self) -> Recipe:
        """The Recipe from the settings, keeping four evenly spaced checkpoints (for the
        checkpoint ensembles of appendix F.2)."""
        from raytda.settings import _even_epochs

        kw = {k: self.settings[k] for k in RECIPE_KEYS if k in self.settings}
        return Recipe(**kw, checkpoint_epochs=_even_epochs(kw["epochs"]))

    def config(self) -> dict[str, Any]:
        # The recipe is keyed through Task.recipe; every other setting is keyed here.
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()
                if k not in RECIPE_KEYS}

    def with_data_dir(self, data_dir: str | None) -> ScaledTask:
        """The same Task reading its data from ``data_dir`` (same key: where files live is
        not content)."""
        return type(self)(data_dir=data_dir, full=self.full, **self._overrides())

    def _overrides(self) -> dict[str, Any]:
        base = self.FULL if self.full else self.CPU
        return {k: v for k, v in self.settings.items() if base.get(k) != v}

    def root(self) -> str:
        """The resolved data directory (a DataError, one line, when it does not exist)."""
        from raytda.data.location import data_dir

        return str(data_dir(self.DATA_NAME, self.data_dir))

    def load(self) -> tuple[Any, Any]:
        """(train, test) data; override. Called once per process per key and root."""
        raise NotImplementedError

    def _data(self) -> tuple[Any, Any]:
        return _cached_load(self, self.declared_key, self.root())

    def train_data(self) -> Any:
        return self._data()[0]

    def test_data(self) -> Any:
        return self._data()[1]

    def __reduce__(self):  # pickles (for Ray workers) as its constructor arguments
        return (_rebuild, (type(self), self.data_dir, self.full, self._overrides()),
                self._identity_state())


def _rebuild(cls: type[ScaledTask], data_dir: str | None, full: bool,
             overrides: dict[str, Any]) -> ScaledTask:
    return cls(data_dir=data_dir, full=full, **overrides)


#: (class, key, root) -> (train, test); a few entries (a sweep touches one or two Tasks)
_LOADED: OrderedDict[tuple[str, str, str], tuple[Any, Any]] = OrderedDict()
_MAX_LOADED = 4


def _cached_load(task: ScaledTask, key: str, root: str) -> tuple[Any, Any]:
    k = (type(task).__qualname__, key, root)
    if k not in _LOADED:
        _LOADED[k] = task.load()
        while len(_LOADED) > _MAX_LOADED:
            _LOADED.popitem(last=False)
    return _LOADED[k]
