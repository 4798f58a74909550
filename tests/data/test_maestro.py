"""MAESTRO events: the 388-id vocabulary, encode/decode round trip, pedal, and the real loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

from raytda.data.maestro import (
    NOTE_OFF,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    decode_events,
    encode_midi,
    load_maestro,
)

# /work/<checkout>/tests/data/test_maestro.py -> /work/shared/data/maestro
MAESTRO = Path(__file__).parents[3] / "shared" / "data" / "maestro"

# (pitch, velocity, start s, end s): chords, repeated pitches, a > 1 s gap, odd times
NOTES = [(60, 80, 0.0, 0.5), (64, 81, 0.0, 0.25), (67, 20, 0.013, 0.731), (60, 127, 0.5, 0.62),
         (21, 1, 0.9, 2.95), (108, 64, 3.217, 3.222 + 1.5), (72, 100, 4.8, 4.81), (48, 55, 6.004, 6.5)]


def build_midi(notes=NOTES, pedal=()) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(v, p, s, e) for p, v, s, e in notes]
    piano.control_changes = [pretty_midi.ControlChange(64, val, t) for t, val in pedal]
    pm.instruments.append(piano)
    return pm


def sorted_notes(pm: pretty_midi.PrettyMIDI) -> list[pretty_midi.Note]:
    return sorted((n for inst in pm.instruments for n in inst.notes), key=lambda n: (n.start, n.pitch))


def test_vocabulary_layout() -> None:
    assert (NOTE_OFF, TIME_SHIFT, VELOCITY, VOCAB_SIZE) == (128, 256, 356, 388)
    # a note of 0.35 s at velocity 100 after a 2.35 s silence
    events = encode_midi(build_midi([(60, 100, 2.35, 2.70)])).tolist()
    assert events == [TIME_SHIFT + 99, TIME_SHIFT + 99, TIME_SHIFT + 34,  # 1 s, 1 s, 0.35 s
                      VELOCITY + 25, 60,                                   # velocity bin 100 // 4, on
                      TIME_SHIFT + 34, NOTE_OFF + 60]


def test_round_trip_through_a_midi_file(tmp_path: Path) -> None:
    path = tmp_path / "piece.mid"
    build_midi().write(str(path))
    events = encode_midi(path)
    assert events.dtype == np.int64
    assert events.min() >= 0 and events.max() < VOCAB_SIZE
    decoded = sorted_notes(decode_events(events))
    original = sorted_notes(pretty_midi.PrettyMIDI(str(path)))
    assert len(decoded) == len(original) == len(NOTES)
    for got, want in zip(decoded, original):
        assert got.pitch == want.pitch
        assert got.velocity // 4 == want.velocity // 4
        assert abs(got.start - want.start) <= 0.01 and abs(got.end - want.end) <= 0.01
    # and encoding the decoded piece gives the same events back
    np.testing.assert_array_equal(encode_midi(decode_events(events)), events)


def test_sustain_pedal_extends_notes() -> None:
    # pedal down 0.1 - 2.0 s: the C (struck at 0.2) rings until 2.0; the E is struck twice
    # under the pedal, so the first E rings until the second; a note after the release and
    # a note before the pedal are untouched
    notes = [(55, 70, 0.0, 0.3), (60, 70, 0.2, 0.4), (64, 70, 0.5, 0.6), (64, 70, 1.0, 1.1),
             (67, 70, 2.5, 2.7)]
    pm = build_midi(notes, pedal=[(0.1, 100), (2.0, 0)])
    decoded = sorted_notes(decode_events(encode_midi(pm)))
    got = [(n.pitch, round(n.start, 2), round(n.end, 2)) for n in decoded]
    assert got == [(55, 0.0, 0.3), (60, 0.2, 2.0), (64, 0.5, 1.0), (64, 1.0, 2.0), (67, 2.5, 2.7)]


def test_dattri_compat_encoder_on_a_small_piece() -> None:
    # dattri's encoder drops notes after the last pedal release, and with no pedal at all
    # encodes nothing; its velocity check compares against the previous raw velocity
    notes = [(60, 70, 0.0, 0.3), (62, 70, 0.5, 0.6), (64, 70, 3.0, 3.2)]
    assert encode_midi(build_midi(notes), dattri_compat=True).size == 0
    events = encode_midi(build_midi(notes, pedal=[(0.2, 127), (1.0, 0)]), dattri_compat=True)
    assert sorted(e for e in events.tolist() if e < NOTE_OFF) == [60, 62]
    assert events.tolist().count(VELOCITY + 70 // 4) == 2  # written again before the second note


@pytest.mark.data
def test_load_maestro_real_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not MAESTRO.is_dir():
        pytest.skip(f"MAESTRO not found at {MAESTRO}")
    seq_len = 32
    x_tr, y_tr, x_te, y_te = load_maestro(MAESTRO, n_train=20, n_test=5, seq_len=seq_len, seed=0,
                                          cache_dir=tmp_path)
    assert x_tr.shape == y_tr.shape == (20, seq_len)
    assert x_te.shape == y_te.shape == (5, seq_len)
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        assert x.dtype == y.dtype == torch.int64
        assert int(x.min()) >= 0 and int(x.max()) < VOCAB_SIZE and int(y.max()) < VOCAB_SIZE
        torch.testing.assert_close(y[:, :-1], x[:, 1:])  # y is x shifted by one
    # consecutive training windows of one piece continue each other: window i+1 starts with
    # the target of window i's last position
    assert bool((x_tr[1:, 0] == y_tr[:-1, -1]).any())
    # test prompts come from different pieces: (distinct) piece openings
    assert len({tuple(r.tolist()) for r in x_te}) == 5
    # the second load reads the cache only (no MIDI file is parsed), and gives the same samples
    def no_parsing(*args, **kwargs):
        raise AssertionError("a MIDI file was parsed although the cache holds every piece")

    monkeypatch.setattr(pretty_midi, "PrettyMIDI", no_parsing)
    again = load_maestro(MAESTRO, n_train=20, n_test=5, seq_len=seq_len, seed=0, cache_dir=tmp_path)
    for a, b in zip(again, (x_tr, y_tr, x_te, y_te)):
        torch.testing.assert_close(a, b)
    assert list(tmp_path.rglob("*.npy"))
