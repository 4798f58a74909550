"""Reproduce the paper's Figure 5 (appendix J): naive against LoRA Ensembles, larger settings.

TRAK with dense features (over the adapter's parameters for LoRA members) on appendix J's
two Transformer settings: the Music Transformer on 15K MAESTRO sequences (``maestro-mt``
with n_train 15000) and a character GPT on tiny Shakespeare (``shakespeare-gpt``); the paper
omits its ResNet + MNIST setting here (LoRA is for Transformers). Figure 3's format and
recipe: naive over I against one base model with L adapters (base on the full set for half
the epochs, each adapter on its own random half for the other half; rank 8, alpha 8,
q_proj and v_proj). The paper gives Figure 5 as plots only (one MAESTRO 15K point missing,
its caption says); its Figure 3 reductions and Table 7 overheads are shown beside ours.

Run after figure4_scaled_dropout.py on the same store, the naive members and LDS models
are already there (same settings, same keys)::

    python experiments/figure5_scaled_lora.py --data-root /work/shared/data --lds-m 20 --I 1,2,3

Paper scale::

    python experiments/figure5_scaled_lora.py --full --executor ray --device cuda
"""

from __future__ import annotations

import sys

import figure3_lora

import common

PROG = "figure5_scaled_lora.py"
SETTINGS = ("maestro-mt", "shakespeare-gpt")
TITLE = "Figure 5 (appendix J): naive vs LoRA Ensemble on the larger settings (TRAK, dense features)"


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, SETTINGS)
    p.add_argument("--I", default=",".join(map(str, figure3_lora.NAIVE_I)), help="naive ensemble sizes")
    p.add_argument("--L", default=",".join(map(str, figure3_lora.LORA_L)), help="adapters per base (I = 1)")
    a = common.parse(p, argv)
    if common.resolve(a, PROG) or common.check_notes(a, PROG):
        return 2
    tasks = [common.appendix_j_task(s, a) for s in common.settings_of(a)]
    outcome = common.run_sweep(a, tasks, figure3_lora.ensembles(common.int_list(a.L), common.int_list(a.I)))
    if outcome is None:
        return 1
    counts = {t.name: common.adapter_counts(t) for t in tasks}
    lines = figure3_lora.render(a, outcome, counts, tasks, TITLE, PROG, common.APPENDIX_J_REASONS,
                                common.APPENDIX_J_UNSTATED)
    lines += ["LoRA recipe as run (paper, appendix C.2: base 10 epochs on the full set, each "
              "adapter 10 more on its own random half):", "",
              *(f"- {common.scale_label(t)}: base {t.lora_spec.base_recipe(t.recipe).epochs} "
                f"epoch(s) on the full set, each adapter {t.lora_spec.adapter_recipe(t.recipe).epochs} "
                f"epoch(s) on its half." for t in tasks), ""]
    common.save(a, "figure5_scaled_lora", lines, outcome.df,
                {"seconds": outcome.seconds, "adapter_params": counts})
    figure3_lora.plot(a, outcome.df, tasks, "figure5_scaled_lora")
    return 0


if __name__ == "__main__":
    sys.exit(main())
