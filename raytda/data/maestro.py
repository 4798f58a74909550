"""MAESTRO v2.0.0 piano MIDI as Music Transformer event sequences (the paper's maestro-mt data).

Event vocabulary (388 ids; the performance encoding of Oore et al. 2018 used by Music
Transformer, with the id layout of the ``midi-neural-processor`` encoder that dattri's
benchmark uses, so our ids mean what dattri's mean):

=========  ===========  ==============================================================
ids        event        value
=========  ===========  ==============================================================
0-127      NOTE_ON      MIDI pitch ``id``
128-255    NOTE_OFF     MIDI pitch ``id - 128``
256-355    TIME_SHIFT   advance the clock by ``(id - 256 + 1) * 10 ms`` (10 ms ... 1 s)
356-387    VELOCITY     bin ``id - 356`` = ``velocity // 4``; applies to the NOTE_ONs after it
=========  ===========  ==============================================================

Encoding a performance:

- The notes of every instrument are merged (MAESTRO has one piano track).
- Sustain pedal (control change 64): the pedal is down from a value >= 64 until the next
  value < 64. A note that starts while the pedal is down sounds until the pedal is
  released (its end becomes ``max(end, release)``), unless the same pitch is struck again
  while the pedal is still down: then it ends at that new onset. This turns pedalled
  notes into long notes, as Music Transformer does; pedal events themselves are not
  encoded.
- Each note becomes a NOTE_ON at its start and a NOTE_OFF at its end. Events are ordered by
  time; at equal times the order is that of the notes sorted by onset (NOTE_ON before the
  NOTE_OFF of the same note), as in dattri's encoder, with equal onsets in pitch order
  (dattri: in the file's note order).
- Gaps are written as TIME_SHIFTs of up to 1 s each (a 2.35 s gap is 1 s, 1 s, 0.35 s).
- A VELOCITY event precedes a NOTE_ON whenever its velocity bin differs from the last one
  written. Decoding gives the note the velocity ``4 * bin``.

Two encoders. The default (``dattri_compat=False``) is the rule above with two fixes:
times are quantized on an absolute 10 ms grid (so rounding never drifts: every decoded
time is within 5 ms of the original) and no note is lost. ``dattri_compat=True``
reproduces dattri's encoder (jason9693's ``midi-neural-processor``) id for id, including
its quirks: each gap is rounded on its own (rounding errors accumulate), notes after the
last pedal release are dropped (an instrument without pedal events encodes to nothing), a
pedal still down at the end of the piece is ignored, notes sustained in the last pedal
interval may be repeated, and the "previous velocity" it compares against is the raw
velocity of the previous event (None after a NOTE_OFF), so a velocity event is written
before almost every NOTE_ON and occasionally one that is needed is skipped.

Samples (:func:`load_maestro`):

- Train: pieces of the CSV's ``train`` split in a seeded random order; each piece is cut
  into non-overlapping windows of ``seq_len + 1`` events at offsets 0, seq_len, 2 seq_len,
  ... (dattri cuts its training pieces the same way, with seq_len 256), ``x`` the first
  ``seq_len`` events and ``y`` the same window shifted by one. Pieces are encoded one by
  one until ``n_train`` windows are collected.
- Test: the paper's 178 test samples are "a held-out prompt plus one generated event".
  dattri builds them (its ``generate.py``, 178 files downloaded as ``generated_music.zip``)
  from the first ``num_prime = 256`` events of each of the 178 ``test``-split pieces plus
  one event *sampled from a trained Music Transformer*, and scores only the last position.
  We have no trained generator at load time, so here the "generated" event is the event
  that follows the prompt in the real piece: test sample i is the first ``seq_len + 1``
  events of a test-split piece (further windows of the same pieces if ``n_test`` exceeds
  the number of pieces), ``x`` the prompt and ``y`` the prompt shifted by one, whose last
  entry ``y[:, -1]`` is the target event.

The data directory may hold the extracted ``maestro-v2.0.0/`` folder (CSV and year
folders) or the ``maestro-v2.0.0-midi.tar.xz`` archive, which is read in one streaming
pass without extracting it. Encoded pieces are cached as ``.npy`` files under
``cache_dir`` (default ``~/.cache/raytda``), never in the data directory.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pretty_midi
import torch

N_NOTE_ON = 128
N_NOTE_OFF = 128
N_TIME_SHIFT = 100
N_VELOCITY = 32
NOTE_ON = 0
NOTE_OFF = NOTE_ON + N_NOTE_ON            # 128
TIME_SHIFT = NOTE_OFF + N_NOTE_OFF        # 256
VELOCITY = TIME_SHIFT + N_TIME_SHIFT      # 356
VOCAB_SIZE = VELOCITY + N_VELOCITY        # 388
STEPS_PER_SECOND = 100                    # 10 ms time-shift resolution
SUSTAIN_CC = 64

ARCHIVE = "maestro-v2.0.0-midi.tar.xz"
FOLDER = "maestro-v2.0.0"
CSV_NAME = "maestro-v2.0.0.csv"
# bump when the encoding changes, so stale caches are not reused
ENCODING_VERSION = 1


# --------------------------------------------------------------------------- sustain pedal

def _pedal_intervals(ccs: Sequence[pretty_midi.ControlChange], end_time: float) -> list[tuple[float, float]]:
    """(down, up) times of the sustain pedal; a pedal never released is up at ``end_time``."""
    intervals, down = [], None
    for cc in sorted(ccs, key=lambda c: c.time):
        if cc.value >= 64 and down is None:
            down = cc.time
        elif cc.value < 64 and down is not None:
            intervals.append((down, cc.time))
            down = None
    if down is not None:
        intervals.append((down, max(end_time, down)))
    return intervals


def _hold(managed: list[pretty_midi.Note], release: float) -> None:
    """Sustain the notes struck during one pedal interval (in onset order), in place.

    Each note lasts until the next onset of its pitch within the interval, or else until
    the release (or its own end, if later).
    """
    next_onset: dict[int, float] = {}
    for note in reversed(managed):
        note.end = next_onset.get(note.pitch, max(release, note.end))
        next_onset[note.pitch] = note.start


def _sustain(notes: list[pretty_midi.Note],
             ccs: Sequence[pretty_midi.ControlChange]) -> list[pretty_midi.Note]:
    """Copies of ``notes`` (sorted by onset) with the pedal turned into note durations."""
    notes = sorted((pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in notes),
                   key=lambda n: n.start)
    end_time = max((n.end for n in notes), default=0.0)
    i = 0
    for down, up in _pedal_intervals(ccs, end_time):
        while i < len(notes) and notes[i].start < down:
            i += 1
        managed = []
        while i < len(notes) and notes[i].start <= up:
            managed.append(notes[i])
            i += 1
        _hold(managed, up)
    return notes


def _sustain_dattri(notes: list[pretty_midi.Note],
                    ccs: Sequence[pretty_midi.ControlChange]) -> list[pretty_midi.Note]:
    """dattri's (midi-neural-processor's) pedal handling, quirks included; see the module doc."""
    # its pedal intervals: a repeated release moves the last interval's end; an unreleased
    # pedal is dropped
    intervals: list[list[float]] = []
    down = None
    for cc in ccs:
        if cc.value >= 64 and down is None:
            down = cc.time
        elif cc.value < 64 and down is not None:
            intervals.append([down, cc.time])
            down = None
        elif cc.value < 64 and intervals:
            intervals[-1][1] = cc.time
    # notes are visited in the file's order (pretty_midi's, by note-off), not by onset
    remaining = [pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in notes]
    stream: list[pretty_midi.Note] = []
    held: list[list[pretty_midi.Note]] = []
    for down, up in intervals:
        managed: list[pretty_midi.Note] = []
        for k, note in enumerate(remaining):
            if note.start < down:
                stream.append(note)
            elif note.start > up:
                remaining = remaining[k:]
                _hold(managed, up)
                break
            else:
                managed.append(note)
        # without a break the notes are neither sustained nor consumed: the next interval
        # sees them again
        held.append(managed)
    for managed in held:
        stream += managed
    stream.sort(key=lambda n: n.start)
    return stream


# --------------------------------------------------------------------------- encode / decode

def _time_shifts(steps: int) -> list[int]:
    """TIME_SHIFT ids advancing the clock by ``steps`` 10 ms steps (none for 0)."""
    out = [TIME_SHIFT + N_TIME_SHIFT - 1] * (steps // N_TIME_SHIFT)
    if steps % N_TIME_SHIFT:
        out.append(TIME_SHIFT + steps % N_TIME_SHIFT - 1)
    return out


def _load_midi(midi: str | os.PathLike | pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    return midi if isinstance(midi, pretty_midi.PrettyMIDI) else pretty_midi.PrettyMIDI(str(midi))


def encode_midi(midi: str | os.PathLike | pretty_midi.PrettyMIDI, dattri_compat: bool = False) -> np.ndarray:
    """Event ids (int64, shape (n_events,), all in [0, 388)) of a MIDI performance.

    Args:
        midi: a MIDI file path or a parsed ``pretty_midi.PrettyMIDI``.
        dattri_compat: reproduce dattri's encoder exactly (see the module docstring).
    """
    pm = _load_midi(midi)
    notes: list[pretty_midi.Note] = []
    for inst in pm.instruments:
        pedal = [cc for cc in inst.control_changes if cc.number == SUSTAIN_CC]
        notes += (_sustain_dattri if dattri_compat else _sustain)(inst.notes, pedal)
    # (time, pitch, velocity or None for a NOTE_OFF); the stable sort by time keeps the
    # onset order of the notes, and each NOTE_ON before its own NOTE_OFF, at equal times.
    # dattri breaks ties between equal onsets by the file's note order; we break them by
    # pitch, so that the events do not depend on how a file happens to list its notes.
    notes.sort(key=(lambda n: n.start) if dattri_compat else (lambda n: (n.start, n.pitch)))
    split = []
    for n in notes:
        split += [(n.start, n.pitch, n.velocity), (n.end, n.pitch, None)]
    split.sort(key=lambda e: e[0])

    events: list[int] = []
    if dattri_compat:
        clock, prev_vel = 0.0, 0
        for time, pitch, vel in split:
            events += _time_shifts(int(round((time - clock) * STEPS_PER_SECOND)))
            if vel is not None and prev_vel != vel // 4:
                events.append(VELOCITY + vel // 4)
            events.append(NOTE_ON + pitch if vel is not None else NOTE_OFF + pitch)
            clock, prev_vel = time, vel
    else:
        step, bin_ = 0, None
        for time, pitch, vel in split:
            t = int(round(time * STEPS_PER_SECOND))  # absolute grid: no accumulated rounding
            events += _time_shifts(t - step)
            step = t
            if vel is None:
                events.append(NOTE_OFF + pitch)
                continue
            if vel // 4 != bin_:
                bin_ = vel // 4
                events.append(VELOCITY + bin_)
            events.append(NOTE_ON + pitch)
    return np.asarray(events, dtype=np.int64)


def decode_events(events: Iterable[int], program: int = 0) -> pretty_midi.PrettyMIDI:
    """A one-piano PrettyMIDI from event ids (the inverse of :func:`encode_midi`).

    A NOTE_OFF closes the most recent open NOTE_ON of its pitch; zero-length notes and
    unmatched events are dropped, and notes still open at the end close there.
    """
    clock, velocity = 0.0, 0
    open_notes: dict[int, list[tuple[float, int]]] = {}
    notes: list[pretty_midi.Note] = []
    for e in (int(e) for e in events):
        if not 0 <= e < VOCAB_SIZE:
            raise ValueError(f"event id {e} is outside [0, {VOCAB_SIZE})")
        if e < NOTE_OFF:
            open_notes.setdefault(e - NOTE_ON, []).append((clock, velocity))
        elif e < TIME_SHIFT:
            pitch = e - NOTE_OFF
            if open_notes.get(pitch):
                start, vel = open_notes[pitch].pop()
                if clock > start:
                    notes.append(pretty_midi.Note(vel, pitch, start, clock))
        elif e < VELOCITY:
            clock += (e - TIME_SHIFT + 1) / STEPS_PER_SECOND
        else:
            velocity = (e - VELOCITY) * 4
    for pitch, starts in open_notes.items():
        notes += [pretty_midi.Note(vel, pitch, start, clock) for start, vel in starts if clock > start]
    notes.sort(key=lambda n: (n.start, n.pitch))
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=program)
    piano.notes = notes
    pm.instruments.append(piano)
    return pm


# --------------------------------------------------------------------------- the data set

def _find_source(root: Path) -> tuple[Path | None, Path | None, Path | None]:
    """(csv path or None if only inside the archive, folder holding the MIDI paths or None,
    archive or None) under ``root``."""
    for base in (root, root / FOLDER):
        if (base / CSV_NAME).is_file() and any(base.glob("20[0-9][0-9]")):
            return base / CSV_NAME, base, None
    if (root / ARCHIVE).is_file():
        csv_path = root / CSV_NAME if (root / CSV_NAME).is_file() else None
        return csv_path, None, root / ARCHIVE
    raise FileNotFoundError(f"no MAESTRO v2.0.0 under {root}: expected {FOLDER}/{CSV_NAME} with "
                            f"year folders, or {ARCHIVE}")


def _read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def read_metadata(root: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``maestro-v2.0.0.csv`` (fields include ``split`` and ``midi_filename``)."""
    csv_path, _, archive = _find_source(Path(root))
    if csv_path is not None:
        return _read_rows(csv_path.read_text(encoding="utf-8"))
    with tarfile.open(archive, "r|xz") as tf:
        for member in tf:
            if member.name == f"{FOLDER}/{CSV_NAME}":
                return _read_rows(tf.extractfile(member).read().decode("utf-8"))
    raise FileNotFoundError(f"{CSV_NAME} is not in {archive}")


class _Pieces:
    """Encoded pieces by ``midi_filename``: from the cache, else read (once) and encoded."""

    def __init__(self, root: Path, cache_dir: Path, dattri_compat: bool, wanted: Sequence[str]) -> None:
        _, self.folder, self.archive = _find_source(root)
        tag = f"v{ENCODING_VERSION}-{'dattri' if dattri_compat else 'default'}"
        self.cache = cache_dir / "maestro-v2.0.0" / tag
        self.dattri_compat = dattri_compat
        self.wanted = list(wanted)
        self._bytes: dict[str, bytes] | None = None

    def _cache_file(self, name: str) -> Path:
        return self.cache / (name.replace("/", "__") + ".npy")

    def _read(self, name: str) -> bytes:
        if self.folder is not None:
            return (self.folder / name).read_bytes()
        if self._bytes is None:
            # one streaming pass over the xz archive (random access into xz means
            # decompressing from the start each time); keep every wanted uncached piece
            todo = {f"{FOLDER}/{n}": n for n in self.wanted if not self._cache_file(n).is_file()}
            self._bytes = {}
            with tarfile.open(self.archive, "r|xz") as tf:
                for member in tf:
                    if member.name in todo:
                        self._bytes[todo[member.name]] = tf.extractfile(member).read()
                        if len(self._bytes) == len(todo):
                            break
        return self._bytes.pop(name)

    def __getitem__(self, name: str) -> np.ndarray:
        path = self._cache_file(name)
        if path.is_file():
            return np.load(path).astype(np.int64)
        events = encode_midi(pretty_midi.PrettyMIDI(io.BytesIO(self._read(name))), self.dattri_compat)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:  # ids < 388 fit in int16; write then rename: safe in parallel
            np.save(f, events.astype(np.int16))
        tmp.replace(path)
        return events


def _windows(pieces: _Pieces, order: Sequence[str], n: int, seq_len: int, prompts: bool) -> np.ndarray:
    """(n, seq_len + 1) windows at offsets 0, seq_len, 2 seq_len, ... of the pieces in ``order``.

    Training windows (``prompts=False``) take every window of a piece before the next
    piece. Test prompts (``prompts=True``) take each piece's first window, then (only if
    more are requested than there are pieces) each piece's second, and so on, so that
    every prompt comes from a different piece while there are pieces left. Pieces are
    encoded only when reached.
    """
    out: list[np.ndarray] = []
    if n > 0 and not prompts:
        for name in order:
            ev = pieces[name]
            for start in range(0, len(ev) - seq_len, seq_len):
                out.append(ev[start : start + seq_len + 1])
                if len(out) == n:
                    return np.stack(out)
    elif n > 0:
        encoded: list[np.ndarray] = []
        k = 0
        while True:
            start, found = k * seq_len, False
            for i, name in enumerate(order):
                if i == len(encoded):
                    encoded.append(pieces[name])
                ev = encoded[i]
                if len(ev) - start > seq_len:
                    found = True
                    out.append(ev[start : start + seq_len + 1])
                    if len(out) == n:
                        return np.stack(out)
            if not found:
                break
            k += 1
    else:
        return np.zeros((0, seq_len + 1), dtype=np.int64)
    raise ValueError(f"only {len(out)} windows of {seq_len + 1} events available, {n} requested")


def load_maestro(root: str | os.PathLike, n_train: int = 5000, n_test: int = 178, seq_len: int = 256,
                 seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 dattri_compat: bool = False) -> tuple[torch.Tensor, ...]:
    """Event windows of MAESTRO v2.0.0: ``(x_train, y_train, x_test, y_test)``, int64.

    ``x_*`` and ``y_*`` have shape (n, seq_len) and ``y = window[1:]`` for ``x = window[:-1]``
    (next-event prediction at every position). Train windows come from the CSV's ``train``
    split, test prompts from its ``test`` split (target: ``y_test[:, -1]``); see the module
    docstring for how pieces and windows are chosen and what "generated event" means here.

    Args:
        root: directory holding the extracted ``maestro-v2.0.0`` folder or ``maestro-v2.0.0-midi.tar.xz``.
        n_train: number of training windows (the paper: 5000).
        n_test: number of test prompts (the paper: 178, one per test piece).
        seq_len: events per input (dattri: 256).
        seed: orders the pieces of each split.
        cache_dir: where encoded pieces are cached (default ``~/.cache/raytda``).
        dattri_compat: encode exactly as dattri does (see the module docstring).
    """
    root = Path(root)
    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "raytda"
    rows = read_metadata(root)
    rng = np.random.default_rng(seed)
    train = sorted(r["midi_filename"] for r in rows if r["split"] == "train")
    test = sorted(r["midi_filename"] for r in rows if r["split"] == "test")
    train = [train[i] for i in rng.permutation(len(train))]
    test = [test[i] for i in rng.permutation(len(test))]
    # the archive pass keeps every uncached piece that may be needed: all of both splits
    pieces = _Pieces(root, cache, dattri_compat, train + test)
    tr = _windows(pieces, train, n_train, seq_len, prompts=False)
    te = _windows(pieces, test, n_test, seq_len, prompts=True)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    return tr[:, :-1].contiguous(), tr[:, 1:].contiguous(), te[:, :-1].contiguous(), te[:, 1:].contiguous()
