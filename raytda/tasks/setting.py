"""The built-in settings as Tasks: a Setting spec (data, model, recipe) behind the Task API.

Classification settings attribute the margin; generative ones (a GPT on token sequences)
the sequence log-likelihood, with one dropout mask per sequence (``dropout_mask_dims=1``)
and LoRA on the attention's W_q and W_v.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from raytda.specs import DataSpec, Setting
from raytda.task import Task

if TYPE_CHECKING:
    from torch import nn


class SettingTask(Task):
    """A registered setting (see :mod:`raytda.tasks`) as a Task."""

    version = "2"

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.recipe = setting.recipe
        generative = setting.model.generative
        self.lora = setting.lora_spec if generative else setting.lora
        self.dropout_mask_dims = 1 if generative else None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.setting.name

    def config(self) -> dict[str, Any]:
        d = self.setting.to_dict()
        d.pop("recipe")  # part of the key already, through Task.recipe
        d.pop("lora", None)
        return d

    def _dataset(self):
        return _load(self.setting.data, self.setting.data.root)

    def train_data(self):
        return self._dataset().train

    def test_data(self):
        return self._dataset().test

    def build_model(self) -> nn.Module:
        from raytda.models import build_model

        return build_model(self.setting.model)

    def output(self):
        from raytda.core.outputs import output_for

        return output_for(self.setting.model.generative)

    def train(self, model, data, seed, device, recipe=None):
        from raytda.core.train import check_tokens

        held = data.tensors()
        if held is not None:
            check_tokens(self.setting.model, *held)
        return super().train(model, data, seed, device, recipe)

    def __reduce__(self):  # pickles as its spec
        return (SettingTask, (self.setting,), self._identity_state())


@lru_cache(maxsize=4)
def _load(spec: DataSpec, root: str | None):
    # root is not part of DataSpec's equality (it is not content), so it keys the cache too.
    from raytda.data.sources import load_data

    return load_data(spec)
