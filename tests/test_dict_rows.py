"""A Task whose data are dict rows of ragged lengths (as a tokenizer gives them), attributed
end to end by ``Sweep``: a Hugging Face GPT-2 built from its config, TRAK with naive and
dropout members, padding that changes no score, and bad rows named before any work."""

from __future__ import annotations

import pytest
import torch

from raytda import Recipe, Sweep, Task
from raytda.core.outputs import CAUSAL_LM, next_token_cross_entropy
from raytda.data.collate import PadCollate
from raytda.data.samples import DictSamples
from raytda.specs import SpecError

transformers = pytest.importorskip("transformers")

VOCAB = 16
ENSEMBLES = ["naive:I=1", "dropout:I=1,D=2"]


def ragged_rows(n: int, seed: int, lo: int = 3, hi: int = 11) -> list[dict]:
    """Tokenizer-shaped rows (input_ids, attention_mask) of lo to hi - 1 tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(lo, hi, (1,), generator=g))
        rows.append({"input_ids": torch.randint(1, VOCAB, (length,), generator=g).tolist(),
                     "attention_mask": [1] * length})
    return rows


class RowDataset(torch.utils.data.Dataset):
    """Rows as a torch Dataset of tensors (the train split; the test split is a list)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {k: torch.tensor(v) for k, v in self.rows[i].items()}


class RaggedLM(Task):
    """A tiny GPT-2 on ragged token rows; ``length`` pads every batch to that many
    positions (None: to the batch's longest row)."""

    name = "ragged-gpt2"
    version = "1"
    dropout_mask_dims = 1
    recipe = Recipe(optimizer="adam", lr=3e-3, batch_size=8, epochs=2)

    def __init__(self, length: int | None = None, test=None) -> None:
        self.collate = PadCollate(labels_from="input_ids", length=length)
        self.test = test if test is not None else ragged_rows(4, 1)

    def config(self):
        return {"length": self.collate.length}

    def build_model(self):
        transformers.utils.logging.set_verbosity_error()  # bos/eos ids beyond a tiny vocab
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=24, n_embd=16, n_layer=2, n_head=2, attn_pdrop=0.0,
            embd_pdrop=0.1, resid_pdrop=0.1, attn_implementation="eager"))

    def output(self):
        return CAUSAL_LM

    def loss(self, logits, y):
        return next_token_cross_entropy(logits, y)

    def train_data(self):
        return DictSamples(RowDataset(ragged_rows(24, 0)), collate=self.collate)

    def test_data(self):
        return DictSamples(self.test, collate=self.collate)


def test_a_sweep_attributes_ragged_dict_rows_with_naive_and_dropout_members(tmp_path) -> None:
    sweep = Sweep(RaggedLM(), "trak", ENSEMBLES, lds=None, store=str(tmp_path), proj_dim=8,
                  progress=False)
    df = sweep.run().set_index("label")
    assert df.loc["dropout I=1 D=2", "n_members"] == 2
    naive, dropout = sweep.scores("naive:I=1"), sweep.scores("dropout:I=1,D=2")
    assert naive.shape == dropout.shape == (4, 24)
    assert torch.isfinite(naive).all() and torch.isfinite(dropout).all()
    assert not torch.allclose(naive, dropout)  # the masks make other members
    # New inputs as a padded dict batch get the scores the sweep stored for them.
    from raytda.attributor import Attributor

    task = sweep.spec.tasks[0]
    x, y = task.data().test.take(torch.arange(4))
    again = Attributor.from_sweep(sweep, "dropout:I=1,D=2").scores(x, y)
    torch.testing.assert_close(again, dropout, rtol=0, atol=0)  # same batches, same numbers


class FromCheckpoint(RaggedLM):
    """The same model weights whatever the padding: members come from one checkpoint."""

    name = "ragged-gpt2-checkpoint"
    recipe = None
    state: dict = {}

    def checkpoints(self):
        return [[self.state]]


def test_padding_five_positions_further_changes_no_score(tmp_path) -> None:
    torch.manual_seed(0)
    FromCheckpoint.state = {k: v.clone() for k, v in FromCheckpoint().build_model()
                            .state_dict().items()}
    longest = max(len(r["input_ids"]) for r in ragged_rows(24, 0) + ragged_rows(4, 1))
    scores = {}
    for length in (None, longest + 5):
        sweep = Sweep(FromCheckpoint(length), "trak", ENSEMBLES, lds=None,
                      store=str(tmp_path / str(length)), proj_dim=8, progress=False)
        sweep.run()
        scores[length] = [sweep.scores(e) for e in ENSEMBLES]
    for short, padded in zip(scores[None], scores[longest + 5]):
        # Measured over 4 model seeds: the largest difference is 2.6e-7 of the largest
        # score (float32 rounding of attention over more positions, through TRAK's
        # solve); 1e-5 is about 40x that.
        assert (short - padded).abs().max() <= 1e-5 * short.abs().max()
        assert not torch.equal(short, torch.zeros_like(short))


@pytest.mark.parametrize("test_rows, message", [
    (ragged_rows(2, 1) + [{"input_ids": [1, 2, VOCAB]}], "test row 2: lacks \\['attention_mask'\\]"),
    (ragged_rows(2, 1) + [{"input_ids": [1, VOCAB], "attention_mask": [1, 1]}],
     f"test row 2: 'input_ids' holds token id {VOCAB}, outside the model's vocabulary "
     f"0..{VOCAB - 1}"),
])
def test_the_check_names_a_bad_row_before_any_work(tmp_path, test_rows, message) -> None:
    sweep = Sweep(RaggedLM(test=test_rows), "trak", ENSEMBLES, lds=None,
                  store=str(tmp_path / "store"), proj_dim=8, progress=False)
    with pytest.raises(SpecError, match=f"^task 'ragged-gpt2': {message}") as err:
        sweep.run()
    assert "\n" not in str(err.value)
    assert not (tmp_path / "store").exists()


class PerPositionMasks(RaggedLM):
    """Masks over (positions, hidden units): their shape would follow each row's length."""

    name = "ragged-gpt2-per-position"
    dropout_mask_dims = None


def test_masks_whose_shape_follows_the_row_length_are_refused_for_dropout_only(tmp_path) -> None:
    sweep = Sweep(PerPositionMasks(), "trak", ENSEMBLES, lds=None, store=str(tmp_path / "s"),
                  proj_dim=8, progress=False)
    with pytest.raises(SpecError, match="dropout site 'transformer.drop' has a mask shape that "
                                        "changes with a row's length .*Task.dropout_mask_dims"):
        sweep.check()
    Sweep(PerPositionMasks(), "trak", ["naive:I=1"], lds=None, store=str(tmp_path / "n"),
          proj_dim=8, progress=False).check()  # no masks, nothing to refuse
