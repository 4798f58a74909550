"""One memory budget per process, split among its caches; sizes as people write them."""

from __future__ import annotations

import pytest

from raytda.core.args import BUDGET_SPLIT, ComputeArgs, parse_size
from raytda.specs import SpecError


def test_caches_are_their_share_of_the_budget_and_fit_in_it():
    args = ComputeArgs(memory_budget_bytes=1 << 30)
    for name, part in BUDGET_SPLIT.items():
        assert getattr(args, name) == int((1 << 30) * part)
    assert sum(getattr(args, k) for k in BUDGET_SPLIT) <= args.memory_budget_bytes


def test_share_divides_what_follows_the_budget_and_keeps_explicit_values():
    args = ComputeArgs(memory_budget_bytes=8 << 30, score_chunk_bytes=1000)
    one = args.share(4)
    assert one.memory_budget_bytes == 2 << 30
    assert one.payload_cache_bytes == args.payload_cache_bytes // 4
    assert one.score_chunk_bytes == 1000
    # Copies made with dataclasses.replace (e.g. a worker's device) still divide.
    import dataclasses

    assert dataclasses.replace(args, device="cuda").share(2).model_cache_bytes == 512 << 20


@pytest.mark.parametrize("text, n", [("8GiB", 8 << 30), ("512MiB", 512 << 20), ("2G", 2 << 30),
                                     ("3GB", 3 * 10**9), ("1048576", 1 << 20),
                                     ("1.5 GiB", 3 << 29)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "8XB", "-1GiB", "0", "GiB"])
def test_parse_size_rejects(text):
    with pytest.raises(SpecError, match="not a positive size"):
        parse_size(text, "--memory-budget")


def test_train_pack_defaults_to_auto_and_says_its_limit():
    # auto: no limit but the memory budget (None); a number is the most per pack; 1: off
    assert ComputeArgs().train_pack == "auto" and ComputeArgs().pack_limit is None
    assert ComputeArgs(train_pack="auto").pack_limit is None
    assert ComputeArgs(train_pack=8).pack_limit == 8
    assert ComputeArgs(train_pack=1).pack_limit == 1
    for bad in (0, -2, "all", True, 2.5):
        with pytest.raises(SpecError, match="train_pack"):
            ComputeArgs(train_pack=bad)


def test_train_pack_flag():
    from raytda.cli import build_sweep, parser

    def compute(*flags):
        return build_sweep(parser().parse_args(["sweep", "--setting", "toy-mlp",
                                                *flags])).compute

    assert compute().train_pack == "auto"
    assert compute("--train-pack", "1").pack_limit == 1
    assert compute("--train-pack", "AUTO").pack_limit is None
    with pytest.raises(SpecError, match="--train-pack"):
        compute("--train-pack", "0")
