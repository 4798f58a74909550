"""Every built-in setting x every ensemble kind (and the other methods on the kinds they
run with), run in-process at a tiny scale; LDS and scores saved, or compared between two
saved runs. Used to show that a refactoring changed no number.

    python benchmarks/compare_builtin.py run OUT.npz [--data-dir DIR]
    python benchmarks/compare_builtin.py compare BEFORE.npz AFTER.npz

``run`` uses only the public API (``Sweep``, ``Sweep.scores``), so the same file runs
against an older checkout (``PYTHONPATH=/path/to/old/tree``). Configurations a setting
cannot run (e.g. LoRA on a model without LoRA targets) are recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np

# Where each built-in's files are under --data-dir (the paper's data, see ../shared/data).
SUBDIR = {"mnist-mlp": "mnist", "cifar2-mlp": "cifar2", "cifar2-resnet9": "cifar2",
          "shakespeare-gpt": "shakespeare", "maestro-mt": "maestro"}
# Tiny sizes: the point is identical numbers, not good LDS.
SIZES = {
    "toy-mlp": {},
    "digits-mlp": {"n_train": 120, "n_test": 12, "epochs": 3},
    "mnist-mlp": {"n_train": 120, "n_test": 12, "epochs": 2},
    "cifar2-mlp": {"n_train": 120, "n_test": 12, "epochs": 2},
    "toy-gpt": {},
    "shakespeare-gpt": {"n_train": 60, "n_test": 6, "epochs": 2},
    "cifar2-resnet9": {"n_train": 80, "n_test": 8, "epochs": 1},
    "maestro-mt": {"n_train": 60, "n_test": 6, "epochs": 1},
}
KINDS = ["naive:I=2", "dropout:I=1,D=3", "dropout-forward:I=1,D=3",
         "dropout-forward-shared:I=1,D=3", "projection-only:I=1,D=2", "lora:I=1,L=2",
         "checkpoints:I=1,C=2", "checkpoints-dropout:I=1,C=2,D=2"]
OTHER_METHODS = {"grad-dot": ["naive:I=2", "dropout:I=1,D=3"],
                 "if": ["naive:I=1", "dropout:I=1,D=2"]}


def configurations() -> list[tuple[str, str]]:
    out = [("trak", k) for k in KINDS]
    out += [(m, k) for m, ks in OTHER_METHODS.items() for k in ks]
    return out


def run(out: str, data_dir: str | None, only: list[str] | None) -> None:
    from raytda import Sweep
    from raytda.specs import LDSSpec

    saved: dict[str, np.ndarray] = {}
    report: dict[str, str] = {}
    store = tempfile.mkdtemp(prefix="raytda-compare-")
    for name, sizes in SIZES.items():
        if only and name not in only:
            continue
        over = dict(sizes)
        for method, ens in configurations():
            # checkpoint kinds need kept checkpoints
            extra = {"checkpoint_epochs": (1,)} if ens.startswith("checkpoints") else {}
            if extra and name in ("cifar2-resnet9", "maestro-mt"):
                extra = {}  # no such override: their runs keep one checkpoint
            where = data_dir and (f"{data_dir}/{SUBDIR[name]}" if name in SUBDIR else data_dir)
            tag = f"{name}|{method}|{ens}"
            t0 = time.time()
            try:
                sw = Sweep(name, methods=[method], ensembles=[ens], lds=LDSSpec(m=5),
                           store=store, data_dir=where, progress=False,
                           proj_dim=64, **over, **extra)
                row = sw.run().iloc[0]
                saved[tag + "|scores"] = sw.scores(ens, method).numpy()
                saved[tag + "|lds"] = np.array([row["lds"]])
                report[tag] = f"lds {row['lds']:.6f} ({time.time() - t0:.1f}s)"
            except Exception as e:  # noqa: BLE001 - recorded, compared as such
                report[tag] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:150]}"
            print(tag, report[tag], flush=True)
    np.savez(out, **saved, _report=np.array(json.dumps(report)))


def compare(before: str, after: str) -> int:
    a, b = np.load(before), np.load(after)
    ra, rb = json.loads(str(a["_report"])), json.loads(str(b["_report"]))
    bad = 0
    print(f"{'configuration':<58} {'LDS before':>11} {'LDS after':>11} {'max rel diff':>13}")
    for tag in sorted(set(ra) | set(rb)):
        ka = f"{tag}|scores"
        if ka not in a.files or ka not in b.files:
            same = (ka not in a.files) == (ka not in b.files)
            bad += not same
            print(f"{tag:<58} {ra.get(tag, '-')[:40]} | {rb.get(tag, '-')[:40]}")
            continue
        sa, sb = a[ka], b[ka]
        rel = float(np.abs(sa - sb).max() / max(np.abs(sa).max(), 1e-30))
        la, lb = float(a[f"{tag}|lds"][0]), float(b[f"{tag}|lds"][0])
        bad += rel > 1e-5 or abs(la - lb) > 1e-6
        print(f"{tag:<58} {la:>11.6f} {lb:>11.6f} {rel:>13.2e}")
    print(f"{bad} configuration(s) differ")
    return int(bad > 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("--data-dir")
    r.add_argument("--only", nargs="*")
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    a = p.parse_args()
    if a.cmd == "run":
        run(a.out, a.data_dir, a.only)
        return 0
    return compare(a.before, a.after)


if __name__ == "__main__":
    sys.exit(main())
