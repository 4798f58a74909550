"""Fixed versus per-sample dropout masks for Dropout Ensemble (TRAK), measured side by side.

A fixed mask makes each member one sub-network for every sample (our default); a per-sample
mask (dattri's example) draws a new mask per sample. Both are scored by LDS on the same
models and LDS ground truth.

Settings that read files take ``--data-dir``, else ``$RAYTDA_DATA/<name>``, else
``~/raytda-data/<name>`` (mnist, cifar2); the device is ``--device auto|cpu|cuda``.

    python experiments/mask_modes.py                                 # digits-mlp, embedded
    python experiments/mask_modes.py --setting mnist-mlp --data-dir ../shared/data/mnist
    # MNIST, reusing Table 1's models and ground truth:
    python experiments/mask_modes.py --setting mnist-mlp --data-dir ../shared/data/mnist \
        --I 1 --D 25 --lds-replicates 2 --store runs/table1_mnist/store
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="digits-mlp")
    p.add_argument("--data-dir", default=None,
                   help="the setting's files (default: $RAYTDA_DATA/<name>, else ~/raytda-data/<name>)")
    p.add_argument("--I", default="1,3")
    p.add_argument("--D", default="10")
    p.add_argument("--lds-m", type=int, default=50)
    p.add_argument("--lds-replicates", type=int, default=1,
                   help="models per LDS subset (2 shares table1_mnist.py's ground truth)")
    p.add_argument("--store", default="runs/mask_modes/store")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None)
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when this process sees it), cpu, cuda or cuda:N")
    a = p.parse_args(argv)

    from raytda import ComputeArgs, LDSSpec, Sweep
    from raytda.data import DataError
    from raytda.data.location import optional_data_dir
    from raytda.ensembles import Ensemble
    from raytda.run.device import resolve_device
    from raytda.specs import SpecError
    from raytda.tasks import task_class

    try:  # bad flags or missing data: one line, before any work
        found = optional_data_dir(task_class(a.setting).DATA_NAME, a.data_dir)
        a.data_dir = None if found is None else str(found)
        # With --executor ray the jobs run on the cluster's nodes, not in this process.
        a.device = resolve_device(a.device, on_cluster=a.executor == "ray")
    except (DataError, SpecError) as e:
        print(f"mask_modes.py: error: {e}", file=sys.stderr)
        return 2

    ensembles = [Ensemble("naive", int(i)) for i in a.I.split(",")]
    ensembles += [Ensemble("dropout", int(i), int(d), mask_mode=mode)
                  for mode in ("fixed", "per-sample") for d in a.D.split(",") for i in a.I.split(",")]
    lds = LDSSpec(m=a.lds_m, models_per_subset=a.lds_replicates)
    sweep = Sweep(a.setting, "trak", ensembles, lds=lds, store=a.store, data_dir=a.data_dir,
                  executor=a.executor, address=a.address, compute=ComputeArgs(device=a.device))
    t0 = time.perf_counter()
    df = sweep.run()
    lines = [f"# Fixed vs per-sample dropout masks, TRAK on {a.setting}", "",
             f"Command: `python experiments/mask_modes.py {' '.join(sys.argv[1:])}` "
             f"({(time.perf_counter() - t0) / 60:.1f} min, cached artifacts reused)", "",
             "| configuration | mask mode | LDS ± se | serve s |", "|---|---|---|---|"]
    for r in df.itertuples():
        mode = r.mask_mode if r.ensemble == "dropout" else "-"
        lines.append(f"| {r.label} | {mode} | {r.lds:.3f} ± {r.lds_se:.3f} | {r.serve_time_s:.1f} |")
    text = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"mask_modes_{a.setting}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
