"""Model weights as the store keeps them: one artifact per model, each kept checkpoint's
state dict under ``final/`` or ``epochE/``. Read by training (a LoRA base model under its
adapters) and by every member source (``Job.member_module``)."""

from __future__ import annotations

import torch

from raytda.store import ArtifactStore

FINAL = "final"


def load_epoch(store: ArtifactStore, model_key: str, epoch: int | None) -> dict[str, torch.Tensor]:
    """Weights a stored model kept at ``epoch`` (None: its final weights)."""
    tensors, _ = store.get(model_key)
    prefix = f"{FINAL if epoch is None else f'epoch{epoch}'}/"
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise KeyError(f"model {model_key} kept no weights for checkpoint {epoch}")
    return state


def stored_module(store: ArtifactStore, task, model_key: str, epoch: int | None = None
                  ) -> torch.nn.Module:
    """``task``'s model with a stored model's weights at ``epoch`` (None: final)."""
    from raytda.core.train import load_state

    return load_state(task.build_model(), load_epoch(store, model_key, epoch))
