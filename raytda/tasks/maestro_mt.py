"""``maestro-mt``: the paper's Music Transformer on MAESTRO v2 event sequences, as a Task.

Paper scale (``full=True``; appendix B.1 and C.2): :class:`~raytda.models.music_transformer.
MusicTransformer` with 6 layers, 8 heads, d_model 512, feed-forward 1024, vocabulary 388,
relative attention, dropout 0.1 (13.1M parameters); :func:`raytda.data.maestro.load_maestro`
windows of 256 events, 5000 train sequences and 178 test samples (a held-out prompt and
one next event each); Adam lr 1e-4, betas (0.9, 0.98), batch 64, 20 epochs. The LoRA
Ensemble's base models train 10 epochs on the full set and each adapter 10 more on its own
random half (``LoRASpec`` defaults: half the recipe's epochs each), rank 8, alpha 8, no
LoRA dropout, on ``q_proj`` and ``v_proj`` of every layer.

CPU scale (default): 2 layers, 4 heads, d_model 64, feed-forward 128 (about 0.12M
parameters), windows of 64 events, 500 train / 50 test, Adam lr 1e-3 (same betas), batch
32, 20 epochs. Why: a paper-scale epoch is ~80 GPU-seconds and LDS needs 50 retrainings;
the reduced model trains in seconds on a CPU. The learning rate is raised because the
reduced run takes 160 optimizer steps per half-set model, where lr 1e-4 barely leaves the
unigram fit; the smaller batch gives more steps on 250-sequence halves.

f and Q. Training samples: f = the sequence log-likelihood ``sum_t log p(y_t | x_<=t)``
of the window, the quantity training raises, and Q = 1 - exp(mean token log-prob)
(:mod:`raytda.core.outputs`; TRAK's 1 - p on the scale of one prediction). Test samples:
only the generated event is attributed, f = ``log p(event | prompt)``: the test targets
are ``IGNORE_INDEX`` (-100) at every position but the last, and the sequence
log-likelihood skips ignored positions. That is dattri's maestro benchmark, which scores
only the last position of each prompt-plus-one-event sample, and it is what the LDS
ground truth records on the test set too.

Dropout: every ``nn.Dropout`` of the model is a site (positional, attention probabilities,
attention output, feed-forward hidden and output: 1 + 4 per layer); ``dropout_mask_dims=1``
drops the same hidden units at every position of a sequence (one mask per site, like the
GPT setting).

Per-sample gradients: ``torch.func.vmap(grad(...))`` works through the relative attention
(the skewing is pad / reshape / slice / masked_fill, all with batching rules, and the
attention is written out rather than a fused kernel), so no per-sample autograd loop is
needed; ``tests/tasks`` checks that vmap runs and matches autograd.
"""

from __future__ import annotations

from typing import Any, ClassVar

from raytda.specs import LoRASpec
from raytda.tasks.builtin import BuiltinTask, PaperSetting


class MaestroMTTask(PaperSetting, BuiltinTask):
    """Music Transformer on MAESTRO v2; ``full=True`` for the paper's scale (module doc)."""

    name = "maestro-mt"
    version = "1"
    DATA_NAME = "maestro"
    dropout_mask_dims = 1
    lora = LoRASpec()
    FULL: ClassVar[dict[str, Any]] = dict(
        n_train=5000, n_test=178, seq_len=256, seed=0,
        n_layer=6, n_head=8, d_model=512, d_ff=1024, vocab=388, dropout=0.1,
        optimizer="adam", lr=1e-4, betas=(0.9, 0.98), batch_size=64, epochs=20)
    CPU: ClassVar[dict[str, Any]] = {**FULL, "n_train": 500, "n_test": 50, "seq_len": 64,
                                     "n_layer": 2, "n_head": 4, "d_model": 64, "d_ff": 128,
                                     "lr": 1e-3, "batch_size": 32}

    def build_model(self):
        from raytda.models.music_transformer import MusicTransformer

        s = self.settings
        return MusicTransformer(n_layer=s["n_layer"], n_head=s["n_head"], d_model=s["d_model"],
                                d_ff=s["d_ff"], vocab=s["vocab"], max_len=s["seq_len"],
                                dropout=s["dropout"])

    def output(self):
        from raytda.core.outputs import GENERATIVE

        return GENERATIVE

    def load(self):
        from raytda.core.outputs import IGNORE_INDEX
        from raytda.data.maestro import load_maestro

        s = self.settings
        x, y, xt, yt = load_maestro(self.root(), n_train=s["n_train"], n_test=s["n_test"],
                                    seq_len=s["seq_len"], seed=s["seed"])
        yt = yt.clone()
        yt[:, :-1] = IGNORE_INDEX  # attribute the prompt's one next event only
        return (x, y), (xt, yt)
