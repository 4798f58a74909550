"""What dict inputs cost: per-sample gradients of a GPT-2 fed tensors vs padded dict batches.

    python benchmarks/bench_dict_rows.py [--rows 96] [--batch 32] [--repeats 3]

One ``transformers`` GPT-2 built from its config (2 layers, n_embd 64, 4 heads, eager
attention, random weights), per-sample gradients of the sequence log-likelihood through
``raytda.core.grads.samples_grads`` (vmap), side by side in one process:

- tensor: ``input_ids`` windows of 32 tokens as an (x, y) pair of tensors (y the next
  tokens), the model called as ``model(input_ids=x).logits``;
- dict, equal lengths: the same windows as tokenizer rows (``input_ids``,
  ``attention_mask``), collated by ``PadCollate``, the model called as ``model(**batch)``;
- dict, ragged: rows of 8 to 32 tokens (uniform), each batch padded to its longest row.

Reported (one torch thread): the best of ``repeats`` rounds (the cases interleaved round
robin) in wall and CPU time, rows and predicted tokens per CPU second, and the speed
relative to the tensor path. The ragged rows hold
fewer real tokens than the windows, so compare tokens/s there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raytda.core.grads import samples_grads  # noqa: E402
from raytda.core.network import Network  # noqa: E402
from raytda.core.outputs import CAUSAL_LM, GENERATIVE  # noqa: E402
from raytda.data.collate import PadCollate  # noqa: E402
from raytda.data.samples import DictSamples, TensorSamples  # noqa: E402

from common import log, table  # noqa: E402

VOCAB, WINDOW = 64, 32


def gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_positions=WINDOW + 1, n_embd=64, n_layer=2, n_head=4,
        attn_pdrop=0.0, embd_pdrop=0.1, resid_pdrop=0.1, attn_implementation="eager",
        bos_token_id=0, eos_token_id=0)).eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (args.rows, WINDOW + 1), generator=g)
    windows = TensorSamples(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    same = DictSamples([{"input_ids": t.tolist(), "attention_mask": [1] * (WINDOW + 1)}
                        for t in tokens], collate=PadCollate(labels_from="input_ids"))
    lengths = torch.randint(8, WINDOW + 1, (args.rows,), generator=g)
    ragged = DictSamples([{"input_ids": t[:n].tolist(), "attention_mask": [1] * int(n)}
                          for t, n in zip(tokens, lengths)],
                         collate=PadCollate(labels_from="input_ids"))
    model = gpt2()
    by_keyword = Network(model, windows.example(), lambda m, x: m(input_ids=x).logits, 1)
    by_batch = Network(model, same.example(), mask_dims=1)

    cases = [("tensor (x, y) windows", by_keyword, windows, GENERATIVE, args.rows * WINDOW),
             ("dict rows, equal lengths", by_batch, same, CAUSAL_LM, args.rows * WINDOW),
             ("dict rows, ragged 8..32", by_batch, ragged, CAUSAL_LM,
              int((lengths - 1).sum()))]
    runs = []
    for _, net, samples, output, _ in cases:
        def run(net=net, samples=samples, output=output) -> None:
            for _ in samples_grads(net, samples, None, "train", args.batch, "cpu", output):
                pass
        run()  # warm-up
        runs.append(run)
    # Round robin, best of each: on a shared CPU the load changes from one second to the
    # next, and timing the cases one after another would bill it to whichever ran then.
    # CPU time (one torch thread) is reported beside wall time: it counts only this
    # process's work, so it moves far less with what else runs on the machine.
    wall, cpu = [float("inf")] * len(cases), [float("inf")] * len(cases)
    for r in range(args.repeats):
        log(f"round {r + 1} of {args.repeats}")
        for i, run in enumerate(runs):
            w0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[i] = min(wall[i], time.perf_counter() - w0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
    rows = [[name, f"{w:.2f}", f"{c:.2f}", f"{args.rows / c:.0f}", f"{predicted / c:.0f}",
             f"{cpu[0] / c:.2f}"]
            for (name, *_, predicted), w, c in zip(cases, wall, cpu)]
    print(f"per-sample gradients, GPT-2 2x64, {args.rows} rows, batch {args.batch}, "
          f"{torch.get_num_threads()} torch threads")
    print(table(["input", "wall s", "cpu s", "rows/cpu s", "predicted tokens/cpu s",
                 "speed vs tensor (cpu)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
