"""Registry of named settings (the paper's appendix B recipes, plus small ones)."""

from __future__ import annotations

from typing import Any

from raytda.specs import PAPER_NORMALIZE, DataSpec, LoRASpec, ModelSpec, Recipe, Setting, SpecError


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
        # The paper's image settings normalize their inputs as dattri 0.3.0's benchmark
        # does (PAPER_NORMALIZE); digits-mlp keeps pixels in [0, 1].
        "mnist-mlp": Setting(
            "mnist-mlp",
            DataSpec("mnist", n_train=5000, n_test=500, normalize=PAPER_NORMALIZE["mnist"]),
            ModelSpec("mlp", 784, (128, 64), 10, 0.1),
            Recipe(**sgd, epochs=100, checkpoint_epochs=_even_epochs(100)),
        ),
        "cifar2-mlp": Setting(
            "cifar2-mlp",
            DataSpec("cifar2", n_train=5000, n_test=500, normalize=PAPER_NORMALIZE["cifar2"]),
            ModelSpec("mlp", 3072, (120, 84), 2, 0.1),
            Recipe(**sgd, epochs=50, checkpoint_epochs=_even_epochs(50)),
        ),
        # Generative settings (f = sequence log-likelihood; LoRA Ensembles apply).
        # toy-gpt: Markov-chain text, no files; a 1-layer model trains in well under a second.
        "toy-gpt": Setting(
            "toy-gpt",
            DataSpec("synthetic-text", n_train=40, n_test=8, seq_len=16),
            ModelSpec("gpt", vocab=12, n_layer=1, n_head=2, d_model=16, block_size=16,
                      dropout=0.1),
            Recipe(optimizer="adam", lr=1e-2, batch_size=8, epochs=10,
                   checkpoint_epochs=_even_epochs(10)),
            LoRASpec(),
        ),
        # shakespeare-gpt: the paper's appendix J setting (nanoGPT's character model on tiny
        # Shakespeare), scaled down to run on a CPU. nanoGPT's shakespeare-char is 6 layers,
        # 6 heads, d 384, context 256, dropout 0.2, ~10.7M parameters; here 2 layers, 4 heads,
        # d 64, context 64 (about 0.1M parameters), dropout 0.1 as for every paper setting,
        # 2000 training / 100 test windows of 64 characters, Adam lr 1e-3 for 10 epochs.
        # Needs the directory holding input.txt (data_dir / --data-dir).
        "shakespeare-gpt": Setting(
            "shakespeare-gpt",
            DataSpec("text", n_train=2000, n_test=100, seq_len=64),
            ModelSpec("gpt", vocab=65, n_layer=2, n_head=4, d_model=64, block_size=64,
                      dropout=0.1),
            Recipe(optimizer="adam", lr=1e-3, betas=(0.9, 0.99), batch_size=32, epochs=10,
                   checkpoint_epochs=_even_epochs(10)),
            LoRASpec(),
        ),
    }


SETTINGS = _registry()


def get_setting(name: str, data_dir: str | None = None, **overrides: Any) -> Setting:
    """A registered setting, optionally with a data directory and overridden fields.

    ``overrides`` may name data fields (n_train, n_test, seed, normalize: ``None`` for
    pixels in [0, 1]), recipe fields (epochs, lr, ...), or ``dropout``.
    """
    if name not in SETTINGS:
        raise SpecError(f"unknown setting {name!r}; choose one of {sorted(SETTINGS)}")
    s = SETTINGS[name]
    data_kw = {k: overrides.pop(k) for k in ("n_train", "n_test", "seed", "normalize")
               if k in overrides}
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
