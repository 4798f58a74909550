"""Reproduce the paper's Figure 4 (appendix J): naive against Dropout Ensembles, larger settings.

TRAK with dense features on appendix J's three settings: a ResNet on MNIST with 60K training
images (``mnist-resnet9``; the paper names only "ResNet", see raytda/tasks/mnist_resnet9.py
for what is ours), the Music Transformer on 15K MAESTRO sequences (``maestro-mt`` with
n_train 15000) and a character GPT on tiny Shakespeare (``shakespeare-gpt``). LDS against
the number of independently trained models I, naive and Dropout (D masked passes per model,
fixed masks), in Figure 1's format. The paper gives Figure 4 as plots only: no numbers to
set beside ours, only its claim that Dropout "still show[s] clear improvements".

CPU scale (default; each reduction beside the paper's setup in the results file)::

    python experiments/figure4_scaled_dropout.py --data-root /work/shared/data --lds-m 20 --I 1,2,3 --D 5

Paper scale (needs GPUs: 50 retrainings of a ResNet-9 on 60K images per LDS)::

    python experiments/figure4_scaled_dropout.py --full --I 1,2,3,4,5,10,25 --D 3,10,25 \
        --executor ray --device cuda
"""

from __future__ import annotations

import sys

import figure1_dropout

import common

PROG = "figure4_scaled_dropout.py"
SETTINGS = ("mnist-resnet9", "maestro-mt", "shakespeare-gpt")
CLAIMS = ["- Appendix J: on MNIST 60K (ResNet), MAESTRO 15K (Music Transformer) and the "
          "Shakespeare GPT, Dropout Ensemble \"still show[s] clear improvements\" over naive "
          "(Figure 4 gives no numbers)."]
TITLE = "Figure 4 (appendix J): naive vs Dropout Ensemble on the larger settings (TRAK, dense features)"


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, SETTINGS)
    p.add_argument("--I", default="1,2,3", help="independently trained models (paper: up to 25)")
    p.add_argument("--D", default="10", help="dropout-masked passes per model (paper: 3, 10, 25)")
    a = common.parse(p, argv)
    if common.resolve(a, PROG) or common.check_notes(a, PROG):
        return 2
    i_values, d_values = common.int_list(a.I), common.int_list(a.D)
    tasks = [common.appendix_j_task(s, a) for s in common.settings_of(a)]
    # dropout-forward is Figure 2's question, not Figure 4's: naive and Dropout only
    kinds = [e for e in figure1_dropout.ensembles(i_values, d_values) if not e.startswith("dropout-forward")]
    outcome = common.run_sweep(a, tasks, kinds,
                               method_overrides=None if a.full else common.APPENDIX_J_CPU_METHOD)
    if outcome is None:
        return 1
    lines, grid = figure1_dropout.render(a, outcome, tasks, TITLE, PROG, paper=lambda r, i: None,
                                         claims=CLAIMS, reasons=common.APPENDIX_J_REASONS,
                                         unstated=common.APPENDIX_J_UNSTATED)
    common.save(a, "figure4_scaled_dropout", lines, outcome.df, {"seconds": outcome.seconds})
    common.plot_grid(a, "figure4_scaled_dropout", grid, "setting", "I", "independently trained models I")
    return 0


if __name__ == "__main__":
    sys.exit(main())
