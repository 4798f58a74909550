"""Registry of named settings (the paper's appendix B recipes, plus small ones)."""

from __future__ import annotations

from typing import Any

from raytda.specs import DataSpec, ModelSpec, Recipe, Setting, SpecError


def _even_epochs(epochs: int, n: int = 5) -> tuple[int, ...]:
    return tuple(sorted({max(1, round(epochs * k / n)) for k in range(1, n)}))


def _registry() -> dict[str, Setting]:
    sgd = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64)
    return {
        "toy-mlp": Setting(
            "toy-mlp",
            DataSpec("synthetic", n_train=60, n_test=12),
            ModelSpec("mlp", 8, (16, 16), 3, 0.1),
            Recipe(**sgd | {"lr": 0.05, "batch_size": 16}, epochs=20,
                   checkpoint_epochs=_even_epochs(20)),
        ),
        "digits-mlp": Setting(
            "digits-mlp",
            DataSpec("digits", n_train=1000, n_test=200),
            ModelSpec("mlp", 64, (128, 64), 10, 0.1),
            Recipe(**sgd, epochs=30, checkpoint_epochs=_even_epochs(30)),
        ),
        "mnist-mlp": Setting(
            "mnist-mlp",
            DataSpec("mnist", n_train=5000, n_test=500),
            ModelSpec("mlp", 784, (128, 64), 10, 0.1),
            Recipe(**sgd, epochs=100, checkpoint_epochs=_even_epochs(100)),
        ),
        "cifar2-mlp": Setting(
            "cifar2-mlp",
            DataSpec("cifar2", n_train=5000, n_test=500),
            ModelSpec("mlp", 3072, (120, 84), 2, 0.1),
            Recipe(**sgd, epochs=50, checkpoint_epochs=_even_epochs(50)),
        ),
    }


SETTINGS = _registry()


def get_setting(name: str, data_dir: str | None = None, **overrides: Any) -> Setting:
    """A registered setting, optionally with a data directory and overridden fields.

    ``overrides`` may name data fields (n_train, n_test, seed), recipe fields (epochs, lr,
    ...), or ``dropout``.
    """
    if name not in SETTINGS:
        raise SpecError(f"unknown setting {name!r}; choose one of {sorted(SETTINGS)}")
    s = SETTINGS[name]
    data_kw = {k: overrides.pop(k) for k in ("n_train", "n_test", "seed") if k in overrides}
    model_kw = {k: overrides.pop(k) for k in ("dropout",) if k in overrides}
    recipe_fields = set(Recipe.__dataclass_fields__)
    recipe_kw = {k: overrides.pop(k) for k in list(overrides) if k in recipe_fields}
    if overrides:
        raise SpecError(f"unknown setting override(s) {sorted(overrides)}")
    if "epochs" in recipe_kw and "checkpoint_epochs" not in recipe_kw:
        recipe_kw["checkpoint_epochs"] = _even_epochs(recipe_kw["epochs"])
    return s.replace(
        data=s.data.replace(root=data_dir if data_dir is not None else s.data.root, **data_kw),
        model=s.model.replace(**model_kw),
        recipe=s.recipe.replace(**recipe_kw),
    )
