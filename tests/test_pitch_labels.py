"""Pitch labels: the piano-roll frame convention, Corpus.read_pitch and the loader's pitch feed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from corpus_fixtures import default_fixture_tracks, midi_of, write_fixture_corpus
from iass.pipelines import corpus_format as cf
from iass.pipelines.activity import intervals_to_frames
from iass.training.data import ChunkConfig, TrainChunks, ValidChunks

HOP = 256
TARGETS = ("vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano")
INSTRUMENT = {"vocals": "lead_vocals", "bass": "electric_bass", "electric_guitar": "electric_guitar",
              "acoustic_guitar": "acoustic_guitar", "piano": "piano"}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The training fixture corpus twice: with notes (pitch labels) and without."""
    with_pitch = tmp_path_factory.mktemp("pitch")
    without = tmp_path_factory.mktemp("nopitch")
    truth = write_fixture_corpus(with_pitch, hop=HOP, pitch=True)
    write_fixture_corpus(without, hop=HOP)
    return with_pitch, without, truth


def test_roll_follows_the_activity_frame_convention():
    """notes_to_roll marks, per key, exactly the frames intervals_to_frames marks for the notes of
    that key (cell overlap), for notes on, just off and between frame-cell edges."""
    hop, sr, n = 512, 44100, 40
    rng = np.random.default_rng(0)
    on = rng.uniform(0, 0.4, 60)
    off = on + rng.uniform(0, 0.1, 60)
    edge = (np.arange(5) * hop + hop / 2) / sr          # notes that start exactly on a cell edge
    on = np.concatenate([on, edge, [0.2]])
    off = np.concatenate([off, edge + hop / sr, [0.2]])  # ... and an empty note
    pitch = rng.integers(19, 111, len(on))               # some outside 21..108: not on the roll
    roll = cf.notes_to_roll(on, off, pitch, n, hop, sr)
    assert roll.shape == (n, cf.NUM_KEYS) and roll.dtype == bool
    for key in range(cf.NUM_KEYS):
        sel = pitch == key + cf.PITCH_MIN
        want = intervals_to_frames(list(zip(on[sel], off[sel])), n, hop, sr)
        np.testing.assert_array_equal(roll[:, key], want, err_msg=f"key {key}")
    assert roll.any()


def test_roll_by_hand():
    """A0 (MIDI 21) from 0.0 to 1 hop: frames 0 and 1 (cells [-h/2, h/2) and [h/2, 3h/2)), not 2;
    C8 (108) from exactly frame 3's cell start to its end: frame 3 only."""
    hop, sr = 100, 1000  # one hop = 0.1 s
    roll = cf.notes_to_roll([0.0, 0.25], [0.1, 0.35], [21, 108], 5, hop, sr)
    assert roll[:, 0].tolist() == [True, True, False, False, False]
    assert roll[:, 87].tolist() == [False, False, False, True, False]
    assert roll[:, 1:87].sum() == 0


def test_read_pitch_of_a_track_with_notes(corpora):
    root, _, truth = corpora
    c = cf.Corpus(root)
    assert c.has_pitch
    tid = next(t for t, tr in truth.items() if tr.native_id == "song01")
    tr = truth[tid]
    n = c.track(tid)["num_frames"]
    for target, inst in INSTRUMENT.items():
        roll = c.read_pitch(tid, target)
        assert roll is not None and roll.shape == (n, cf.NUM_KEYS) and roll.dtype == bool
        want = intervals_to_frames(tr.stems.get(inst, []), n, HOP, cf.SAMPLE_RATE)
        key = midi_of(inst) - cf.PITCH_MIN
        np.testing.assert_array_equal(roll[:, key], want, err_msg=target)
        assert roll.sum() == want.sum()                      # nothing on any other key
    # song00 has no acoustic guitar stem: its pitch is known silence, not unknown
    tid0 = next(t for t, tr in truth.items() if tr.native_id == "song00")
    roll = c.read_pitch(tid0, "acoustic_guitar")
    assert roll is not None and not roll.any()
    # a group target is the union of its instruments' notes
    keys = c.read_pitch(tid, "keys")
    assert keys[:, midi_of("piano") - cf.PITCH_MIN].any() and keys[:, midi_of("organ") - cf.PITCH_MIN].any()


def test_a_window_of_the_roll_is_that_slice_of_the_whole(corpora):
    root, _, truth = corpora
    c = cf.Corpus(root)
    tid = next(t for t, tr in truth.items() if tr.native_id == "song03")
    whole = c.read_pitch(tid, "keys")
    n = len(whole)
    for start, frames in ((0, 10), (37, 100), (n - 5, 40), (n + 3, 4), (1, n - 1)):
        want = np.zeros((frames, cf.NUM_KEYS), bool)
        part = whole[start:start + frames]
        want[: len(part)] = part
        np.testing.assert_array_equal(c.read_pitch(tid, "keys", start, frames), want, err_msg=str(start))
    assert c.read_pitch(tid, "drums", 0, 10) is None


def test_unknown_pitch_is_none_never_silence(corpora):
    root, without, truth = corpora
    c = cf.Corpus(root)
    song = next(t for t, tr in truth.items() if tr.native_id == "song01")
    musdb = next(t for t, tr in truth.items() if tr.source == "musdb")
    assert c.read_pitch(song, "drums") is None                # unpitched
    assert c.read_pitch(musdb, "vocals") is None             # track without pitch labels
    assert c.read_pitch(musdb, "piano") is None              # target unknown in the track
    plain = cf.Corpus(without)
    assert not plain.has_pitch
    assert all(plain.read_pitch(song, t) is None for t in TARGETS)
    assert plain.read_notes(song).num_rows == 0


def cfg(**kw) -> ChunkConfig:
    base = dict(targets=TARGETS, chunk_samples=int(0.75 * 44100), hop=HOP, seed=7)
    base.update(kw)
    return ChunkConfig(**base)


def test_loader_pitch_feed(corpora):
    """pitch on: a 5th element (K, T, 88) sliced from read_pitch at the slot's start, NaN where
    unknown; the first four elements are identical to pitch off's (no draw from the rng)."""
    root, _, truth = corpora
    c = cf.Corpus(root)
    on = TrainChunks(root, cfg(pitch=True))
    off = TrainChunks(root, cfg())
    T = cfg().num_frames
    seen_known = seen_nan = 0
    for i in range(12):
        a, b = on[i], off[i]
        assert len(a) == 5 and len(b) == 4
        for x, y in zip(a[:4], b):
            assert torch.equal(x, y) or (x.dtype.is_floating_point and torch.equal(x.nan_to_num(-7), y.nan_to_num(-7)))
        pitch = a[4]
        assert pitch.shape == (len(TARGETS), T, cf.NUM_KEYS) and pitch.dtype == torch.float32
        slots, _ = on.plan(i)
        for k, (target, (tid, start)) in enumerate(zip(TARGETS, slots[:-1])):
            roll = c.read_pitch(tid, target)
            if roll is None or not a[2][k]:
                assert torch.isnan(pitch[k]).all()
                seen_nan += 1
                continue
            want = np.zeros((T, cf.NUM_KEYS), np.float32)
            part = roll[start:start + T]
            want[: len(part)] = part
            np.testing.assert_array_equal(pitch[k].numpy(), want)
            seen_known += 1
    assert seen_known and seen_nan
    assert torch.isnan(on[0][4][TARGETS.index("drums")]).all()


def test_valid_chunks_pitch_and_from_params(corpora):
    root, _, _ = corpora
    item = ValidChunks(root, cfg(pitch=True), chunks_per_track=2)[0]
    assert len(item) == 5 and item[4].shape[-1] == 88
    assert ChunkConfig.from_params({}, TARGETS, HOP, 44100).pitch is False
    assert ChunkConfig.from_params({}, TARGETS, HOP, 44100, pitch=True).pitch is True
    # a corpus without pitch labels: every target unknown
    _, without, _ = corpora
    assert torch.isnan(TrainChunks(without, cfg(pitch=True))[3][4]).all()


def test_fixture_tracks_are_unchanged_without_pitch():
    assert all(tr.notes is None for tr in default_fixture_tracks())
