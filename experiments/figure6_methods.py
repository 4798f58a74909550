"""Reproduce the paper's Figure 6: Dropout Ensembles for IF, Grad-Dot and Grad-Cos, with
EK-FAC influence functions (``ekfac``, issue 30) beside IF.

MNIST-MLP; naive independent ensembles against Dropout Ensembles (D masked passes per
model) over I, for each method; LDS. The paper gives this figure without a table; its
text: Dropout I = 1 matches naive I = 10 for IF and Grad-Dot, and naive I = 5 for Grad-Cos.

CPU scale (default; I = 1, 3 and D = 10, see the results file)::

    python experiments/figure6_methods.py --data-root /work/shared/data

Paper scale::

    python experiments/figure6_methods.py --full --I 1,2,3,4,5,10 --D 10,25

IF solves C^-1 g by conjugate gradients, C the Gauss-Newton matrix of the member's
training loss over its own training rows (``--if-curvature hessian``: the exact Hessian,
truncated at non-positive curvature); ``--if-cg-max-iter`` defaults to 10, dattri 0.3.0's
default for ``IFAttributorCG`` (raytda's library default is 100, to a 1e-6 residual). At
1000 training samples that is about 8 s per member block on 2 cores instead of about 80 s.
EK-FAC's flags (``--ekfac-damping``, ``--ekfac-hessian-samples``, ``--ekfac-fisher``)
reach EK-FAC only, as the --if-* flags reach IF only.
``--naive-I`` adds naive ensembles only (e.g. 10, the paper's point of comparison,
without the I x D Dropout members that would cost).
"""

from __future__ import annotations

import sys

import common

PROG = "figure6_methods.py"
METHODS = ("if", "ekfac", "grad-dot", "grad-cos")
PAPER_CLAIMS = ["- IF and Grad-Dot: Dropout Ensemble with I = 1 matches naive with I = 10.",
                "- Grad-Cos: Dropout Ensemble with I = 1 matches naive with I = 5."]


def methods_of(a) -> list:
    """The methods to run. IF and EK-FAC share Method fields (``damping``,
    ``hessian_samples``), so each gets its own flags' values: the --if-* flags reach IF
    and the --ekfac-* flags EK-FAC, nothing else (a Method keys only the fields its method
    declares, so the others' values never enter a key)."""
    from raytda.methods import Method

    own = {"if": dict(damping=a.if_damping, cg_max_iter=a.if_cg_max_iter,
                      hessian_samples=a.if_hessian_samples, curvature=a.if_curvature),
           "ekfac": dict(damping=a.ekfac_damping, hessian_samples=a.ekfac_hessian_samples,
                         fisher=a.ekfac_fisher)}
    return [Method(m, proj_dim=a.proj_dim, **own.get(m, {})) for m in a.methods.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, ["mnist-mlp"])
    p.add_argument("--I", default="1,3", help="independently trained models")
    p.add_argument("--D", default="10", help="dropout-masked passes per model")
    p.add_argument("--naive-I", default="", help="more I values for naive ensembles only")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--if-cg-max-iter", type=int, default=10,
                   help="IF: conjugate-gradient iterations (dattri's default, 10)")
    p.add_argument("--if-damping", type=float, default=1e-3, help="IF: damping added to H")
    p.add_argument("--if-hessian-samples", type=int, default=None,
                   help="IF: at most this many of the member's training rows in the "
                        "curvature (default: all of them)")
    p.add_argument("--if-curvature", choices=("ggn", "hessian"), default="ggn",
                   help="IF: Gauss-Newton matrix (default) or the exact Hessian")
    p.add_argument("--ekfac-damping", type=float, default=1e-3,
                   help="EK-FAC: damping added to its curvature (IF's default, 1e-3)")
    p.add_argument("--ekfac-hessian-samples", type=int, default=None,
                   help="EK-FAC: at most this many of the member's training rows in the "
                        "factors (default: all of them)")
    p.add_argument("--ekfac-fisher", choices=("true", "empirical"), default="true",
                   help="EK-FAC: labels of the curvature, drawn from the model (default) "
                        "or the data's")
    a = common.parse(p, argv)
    if common.resolve(a, PROG) or common.check_notes(a, PROG):
        return 2
    i_values, d_values = common.int_list(a.I), common.int_list(a.D)
    naive_only = common.int_list(a.naive_I) if a.naive_I else []
    ensembles = [f"naive:I={i}" for i in sorted(set(i_values) | set(naive_only))]
    ensembles += [f"dropout:I={i},D={d}" for d in d_values for i in i_values]
    tasks = [common.task_for(s, a) for s in common.settings_of(a)]
    outcome = common.run_sweep(a, tasks, ensembles, methods=methods_of(a))
    if outcome is None:
        return 1
    df = outcome.df
    lines = common.header("Figure 6: naive vs Dropout Ensemble for IF, EK-FAC, Grad-Dot, "
                          "Grad-Cos", PROG, a, outcome)
    hess = ("all the member's" if a.if_hessian_samples is None
            else f"at most {a.if_hessian_samples} of the member's")
    curv = {"ggn": "Gauss-Newton matrix", "hessian": "exact Hessian"}[a.if_curvature]
    lines += [f"- IF: at most {a.if_cg_max_iter} conjugate-gradient iterations (dattri's "
              f"default is 10; raytda's 100), damping {a.if_damping}, {curv} over {hess} "
              "training rows.", ""]
    if "ekfac" in a.methods.split(","):
        rows = ("all the member's" if a.ekfac_hessian_samples is None
                else f"at most {a.ekfac_hessian_samples} of the member's")
        lines[-1:-1] = [f"- EK-FAC: damping {a.ekfac_damping}, {a.ekfac_fisher} Fisher of the "
                        f"Task's loss over {rows} training rows, factors fitted once per "
                        "member (masked members on their own mask) and charged to it once."]
    all_i = sorted(set(i_values) | set(naive_only))
    lines += ["LDS by I, measured ± se:", "", *common.grid_lines(df, "I", all_i), "",
              "The paper's claims (Figure 6 has no table):", "", *PAPER_CLAIMS, "",
              "Costs (measured, as if run alone):", "",
              *common.md_table(["method", "configuration", "LDS", "train s", "serve s"],
                               ([r.method, r.label, common.lds_cell(r), f"{r.train_time_s:.1f}",
                                 f"{r.serve_time_s:.1f}"]
                                for r in df.sort_values(["method", "ensemble", "I"]).itertuples()))]
    if "if_converged" in df:
        lines += ["", "IF's conjugate gradients (worst member of each configuration):", "",
                  *common.md_table(["configuration", "curvature", "iterations",
                                    "max rel. residual", "negative-curvature columns",
                                    "converged"],
                                   ([r.label, r.if_curvature, str(int(r.if_cg_iterations)),
                                     f"{r.if_cg_max_rel_residual:.3g}",
                                     str(int(r.if_negative_curvature_columns)),
                                     str(bool(r.if_converged))]
                                    for r in df[df.method == "if"].sort_values(
                                        ["ensemble", "I"]).itertuples()))]
    common.save(a, "figure6_methods", lines, df, {"seconds": outcome.seconds})
    common.plot_grid(a, "figure6_methods", df, "method", "I", "independently trained models I")
    return 0


if __name__ == "__main__":
    sys.exit(main())
