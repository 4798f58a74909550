"""`raytda store verify` names every kind of damage, `--repair` removes it, and a rerun
then gives the undisturbed run's results; `raytda plan` changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tiny_task
import torch

from raytda.cli import main
from raytda.store import ArtifactStore


def _flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _results(sweep) -> dict[str, tuple[float, torch.Tensor]]:
    df = sweep.run()  # one row per configuration, in the sweep's order
    return {e: (row.lds, sweep.scores(e)) for e, row in zip(tiny_task.ENSEMBLES, df.itertuples())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_torch_thread):
    """An undisturbed run: its store's files and its results."""
    root = tmp_path_factory.mktemp("clean")
    sweep = tiny_task.sweep(str(root))
    return root, _results(sweep)


def _blocks(store: ArtifactStore, result: str) -> list[str]:
    """The block artifacts a result was made from, as its record lists them."""
    return [k for k in store.record(result)["inputs"] if k.startswith("block-")]


def _damage(store: ArtifactStore) -> dict[str, tuple[str, str]]:
    """Damage one of each; returns {what: (key or name, verify's word for it)}."""
    model = store.keys("model")[0]
    # The block deleted must be an input of a result whose record stays readable (the
    # Dropout one: two blocks), or nothing would say it is missing.
    edited_result, result = sorted(store.keys("result"), key=lambda r: len(_blocks(store, r)))
    block, deleted_block = _blocks(store, result)[:2]
    q = store.keys("q")[0]
    damaged = {"model": model, "block": block, "ldsmodel": store.keys("ldsmodel")[0],
               "result": result, "scores": store.keys("scores")[0]}
    for key in damaged.values():
        _flip(Path(store.paths(key)[0]))
    record = Path(store.paths(edited_result)[1])
    lds = store.meta(edited_result)["lds"]
    record.write_text(record.read_text().replace(repr(lds), repr(lds + 0.5)))
    payload = Path(store.paths(q)[0])
    payload.write_bytes(payload.read_bytes()[:-40])
    for path in store.paths(deleted_block):
        Path(path).unlink()
    # A writer killed mid-write: a process that starts a temp file and dies.
    target = store.paths(store.keys("model")[0])[0]
    subprocess.run([sys.executable, "-c", "import os, sys\n"
                    f"from raytda.store.artifacts import temp_name\n"
                    f"open(temp_name({target!r}), 'wb').write(b'x' * 4096)\n"
                    "os._exit(9)"], check=False)
    expect = {what: (key, "corrupt") for what, key in damaged.items()}
    expect["record"] = (edited_result, "corrupt")
    expect["q"] = (q, "truncated")
    expect["deleted block"] = (deleted_block, "missing")
    expect["killed writer"] = (".tmp-", "stale temp")
    return expect


def test_verify_names_each_damage_and_repair_restores_the_results(
        tmp_path, reference, capsys, one_torch_thread):
    clean_root, clean = reference
    root = tmp_path / "store"
    subprocess.run(["cp", "-r", str(clean_root), str(root)], check=True)
    store = ArtifactStore(str(root))
    expect = _damage(store)

    assert main(["store", "verify", str(root), "--quiet"]) == 1
    lines = capsys.readouterr().out.splitlines()
    for what, (name, word) in expect.items():
        assert any(line.startswith(f"{word}: ") and name in line for line in lines), \
            (what, name, word, lines)

    assert main(["store", "verify", str(root), "--repair", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["store", "verify", str(root), "--quiet"]) == 0
    assert not list(root.rglob("*.tmp-*"))

    # Same seeds, same single thread: the rebuilt artifacts are bit-identical, so the
    # results are compared exactly (costs are measured again and are not compared).
    again = _results(tiny_task.sweep(str(root)))
    assert again.keys() == clean.keys()
    for label, (lds, scores) in clean.items():
        assert again[label][0] == lds and torch.equal(again[label][1], scores), label


def test_plan_changes_nothing_and_a_run_rebuilds_what_it_finds_broken(
        tmp_path, reference, capsys, one_torch_thread):
    clean_root, clean = reference
    root = tmp_path / "store"
    subprocess.run(["cp", "-r", str(clean_root), str(root)], check=True)
    store = ArtifactStore(str(root))
    q = store.keys("q")[0]
    payload = Path(store.paths(q)[0])
    payload.write_bytes(payload.read_bytes()[:-40])  # truncated: found by its size
    result, other = store.keys("result")
    record = Path(store.paths(result)[1])
    lds = store.meta(result)["lds"]
    record.write_text(record.read_text().replace(repr(lds), repr(lds + 0.5)))
    block = _blocks(store, other)[0]  # the other result loses an input
    for path in store.paths(block):
        Path(path).unlink()
    before = _snapshot(root)

    assert main(["plan", *tiny_task.cli_args(str(root), str(tmp_path / "out"))]) == 0
    assert _snapshot(root) == before  # planning only reads
    plan = tiny_task.sweep(str(root)).plan()
    todo = {j.key for j in plan.todo}
    assert {q, result, block} <= todo
    assert set(store.keys("result")) <= todo  # every result lost an input

    again = _results(tiny_task.sweep(str(root)))
    for label, (lds, scores) in clean.items():
        assert again[label][0] == lds and torch.equal(again[label][1], scores), label
    assert store.has(q) and store.has(block)


def test_gc_removes_only_what_no_result_references(tmp_path, reference, capsys):
    clean_root, _ = reference
    root = tmp_path / "store"
    subprocess.run(["cp", "-r", str(clean_root), str(root)], check=True)
    store = ArtifactStore(str(root))
    kept = set(store.keys())
    # Left behind by an interrupted sweep: a model (of a third ensemble member) and a
    # block made from it, referenced by no result.
    store.put("model-unused", {"w": torch.ones(3)}, {}, inputs=[])
    store.put("block-unused", {"w": torch.ones(3)}, {}, inputs=["model-unused"])
    store.put("blockpart-unused", {"w": torch.ones(3)}, {}, owner="block-unused")

    assert main(["store", "gc", str(root), "--dry-run"]) == 0
    assert set(store.keys()) == kept | {"model-unused", "block-unused", "blockpart-unused"}
    assert main(["store", "gc", str(root)]) == 0
    assert set(store.keys()) == kept
    assert main(["store", "verify", str(root), "--quiet"]) == 0


@pytest.mark.parametrize("damage", ["model record", "score chunk", "q record", "all three"])
def test_verify_finds_in_one_pass_everything_a_repair_leaves_behind(
        tmp_path, reference, capsys, damage):
    """Damage whose dependents a single pass once missed: the model every other artifact
    is made from loses its record (its payload alone stays), a score chunk is corrupt (its
    result is incomplete without it), a Q payload loses its record. One verify names each
    and what depends on it; after --repair a second verify finds nothing."""
    clean_root, _ = reference
    root = tmp_path / "store"
    subprocess.run(["cp", "-r", str(clean_root), str(root)], check=True)
    store = ArtifactStore(str(root))
    model, chunk, q = store.keys("model")[0], store.keys("scores")[0], store.keys("q")[-1]
    owner = store.record(chunk)["owner"]
    expect: set[str] = set()
    if damage in ("model record", "all three"):
        expect |= {model} | {k for k in store.keys()
                             if model in (store.record(k)["inputs"] or ())}
        Path(store.paths(model)[1]).unlink()
    if damage in ("q record", "all three"):
        expect |= {q} | {k for k in store.keys() if q in (store.record(k)["inputs"] or ())}
        Path(store.paths(q)[1]).unlink()
    if damage in ("score chunk", "all three"):
        expect |= {chunk, owner}
        _flip(Path(store.paths(chunk)[0]))

    assert main(["store", "verify", str(root), "--quiet"]) == 1
    lines = capsys.readouterr().out.splitlines()
    named = {k for k in {*store.keys(), model, q} if any(k in ln.split(" (")[0] for ln in lines)}
    assert expect <= named, (expect - named, lines)
    if damage == "score chunk":
        assert any(ln.startswith("stale: ") and owner in ln and f"its part {chunk}" in ln
                   for ln in lines), lines

    assert main(["store", "verify", str(root), "--repair", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["store", "verify", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].endswith("all intact"), out


def test_verify_draws_no_progress_bar_when_stderr_is_not_a_terminal(
        tmp_path, reference, capsys, monkeypatch):
    clean_root, _ = reference
    assert main(["store", "verify", str(clean_root)]) == 0
    assert "verifying" not in capsys.readouterr().err  # captured: not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["store", "verify", str(clean_root)]) == 0
    assert "verifying" in capsys.readouterr().err  # the same call on a terminal draws it
