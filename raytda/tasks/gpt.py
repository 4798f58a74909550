"""The character language models: ``toy-gpt`` and ``shakespeare-gpt``.

A small decoder-only Transformer (:class:`raytda.models.gpt.GPT`) on windows of
``seq_len`` tokens. f is the sequence log-likelihood and Q = 1 - exp(mean token log-prob)
(:data:`raytda.core.outputs.GENERATIVE`); one dropout mask per sequence
(``dropout_mask_dims = 1``: the same hidden units dropped at every position); LoRA
Ensembles adapt W_q and W_v of every attention layer (:class:`~raytda.specs.LoRASpec`
defaults). Adam, keeping four evenly spaced checkpoints besides the last.

- ``toy-gpt``: Markov-chain text over 12 tokens (:func:`raytda.data.text.
  load_synthetic_text`), no files; a 1-layer model trains in well under a second.
- ``shakespeare-gpt``: the paper's appendix J setting (nanoGPT's character model on tiny
  Shakespeare), scaled down to run on a CPU. nanoGPT's shakespeare-char is 6 layers,
  6 heads, d 384, context 256, dropout 0.2, ~10.7M parameters; here 2 layers, 4 heads,
  d 64, context 64 (about 0.1M parameters), dropout 0.1 as for every paper setting, 2000
  training / 100 test windows of 64 characters, Adam lr 1e-3 for 10 epochs. Reads
  ``input.txt`` from its data directory. The paper states neither the data sizes nor the
  training schedule of its run, so there is no paper scale to give: ``FULL = CPU``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from raytda.specs import LoRASpec, SpecError
from raytda.tasks.builtin import BuiltinTask, PaperSetting


class GPTTask(BuiltinTask):
    """A GPT language model on token windows; subclasses give the data and the settings."""

    version = "3"  # issue 17 moved the built-ins from Setting specs to task classes
    dropout_mask_dims = 1
    lora = LoRASpec()

    def _check_settings(self) -> None:
        super()._check_settings()
        s = self.settings
        sizes = ("vocab", "n_layer", "n_head", "d_model", "block_size", "seq_len")
        if not all(isinstance(s[k], int) and s[k] >= 1 for k in sizes):
            raise SpecError(f"{', '.join(sizes)} must be integers >= 1, got "
                            f"{[s[k] for k in sizes]}")
        if s["d_model"] % s["n_head"]:
            raise SpecError(f"d_model ({s['d_model']}) must be divisible by n_head "
                            f"({s['n_head']})")
        if s["seq_len"] > s["block_size"]:
            raise SpecError(f"seq_len {s['seq_len']} exceeds the model's block_size "
                            f"{s['block_size']}")

    def build_model(self):
        from raytda.models.gpt import GPT

        s = self.settings
        return GPT(s["vocab"], s["n_layer"], s["n_head"], s["d_model"], s["block_size"],
                   s["dropout"])

    def output(self):
        from raytda.core.outputs import GENERATIVE

        return GENERATIVE

    def train(self, model, data, seed, device, recipe=None):
        from raytda.core.train import check_tokens

        held = data.tensors()
        if held is not None:  # a clear error before training, not an index error inside
            check_tokens(*held, vocab=self.settings["vocab"],
                         block_size=self.settings["block_size"])
        return super().train(model, data, seed, device, recipe)


class ToyGPTTask(GPTTask):
    """1-layer GPT on Markov-chain token sequences, no files; trains in under a second."""

    name = "toy-gpt"
    CPU: ClassVar[dict[str, Any]] = dict(
        n_train=40, n_test=8, seq_len=16, seed=0,
        vocab=12, n_layer=1, n_head=2, d_model=16, block_size=16, dropout=0.1,
        optimizer="adam", lr=1e-2, batch_size=8, epochs=10)
    FULL = CPU  # no paper counterpart: one scale

    def load(self):
        from raytda.data.text import load_synthetic_text

        s = self.settings
        return load_synthetic_text(s["n_train"], s["n_test"], s["seq_len"], s["seed"]).splits()


class ShakespeareGPTTask(PaperSetting, GPTTask):
    """2-layer character GPT on tiny Shakespeare (nanoGPT's model, reduced for a CPU).

    See the module docstring for what is reduced."""

    name = "shakespeare-gpt"
    DATA_NAME = "shakespeare"
    CPU: ClassVar[dict[str, Any]] = dict(
        n_train=2000, n_test=100, seq_len=64, seed=0,
        vocab=65, n_layer=2, n_head=4, d_model=64, block_size=64, dropout=0.1,
        optimizer="adam", lr=1e-3, betas=(0.9, 0.99), batch_size=32, epochs=10)
    FULL = CPU  # the paper gives no sizes or schedule for this run (module docstring)

    def load(self):
        from raytda.data.text import load_text

        s = self.settings
        return load_text(self.root(), s["n_train"], s["n_test"], s["seq_len"], s["seed"]).splits()
