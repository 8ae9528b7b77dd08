"""The training data: chunk/label alignment, track mixing, augmentation, unknowns, determinism."""
from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from corpus_fixtures import FixtureTrack, frame_labels, gate, write_fixture_corpus
from iass.errors import ConfigError
from iass.pipelines.corpus_format import Corpus
from iass.training.data import (ChunkConfig, StepBatchSampler, TrainChunks, ValidChunks, loader_options,
                                magnitude)

HOP = 256
TARGETS = ("vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano")
INSTRUMENT = {"vocals": "lead_vocals", "drums": "drums", "bass": "electric_bass",
              "electric_guitar": "electric_guitar", "acoustic_guitar": "acoustic_guitar", "piano": "piano"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    truth = write_fixture_corpus(root, hop=HOP)
    return root, truth


def cfg(**kw) -> ChunkConfig:
    base = dict(targets=TARGETS, chunk_samples=int(0.75 * 44100), hop=HOP, seed=7)
    base.update(kw)
    return ChunkConfig(**base)


def stem_audio(root, track_id, instrument):
    """(n, 2) read directly with soundfile (not through the code under test); zeros if absent."""
    c = Corpus(root)
    rows = c.stems.filter((c.stems["track_id"] == track_id) & (c.stems["instrument"] == instrument))
    n = c.track(track_id)["num_samples"]
    if rows.height == 0:
        return np.zeros((n, 2), np.float32)
    audio, _ = sf.read(str(root / rows["path"][0]), dtype="float32", always_2d=True)
    return audio


def fit_gain(chunk: np.ndarray, ref: np.ndarray) -> tuple[float, bool, float]:
    """chunk (2, L) ~ g * ref (2, L), possibly channel-swapped -> (g, swapped, residual)."""
    best = None
    for swapped, r in ((False, ref), (True, ref[::-1])):
        denom = float((r * r).sum())
        g = float((chunk * r).sum() / denom) if denom > 0 else 0.0
        res = float(np.abs(chunk - g * r).max())
        if best is None or res < best[2]:
            best = (g, swapped, res)
    return best


def test_chunks_and_labels_align_sample_by_sample(corpus):
    root, truth = corpus
    ds = TrainChunks(root, cfg())
    L, T = ds.cfg.chunk_samples, ds.cfg.num_frames
    checked = 0
    for index in range(12):
        mixture, targets, known, activity = (t.numpy() for t in ds[index])
        slots, _ = ds.plan(index)
        assert targets.shape == (6, 2, L) and activity.shape == (6, T) and T == L // HOP + 1
        for k, target in enumerate(TARGETS):
            track_id, start_frame = slots[k]
            offset = start_frame * HOP                     # chunks start on a frame centre
            inst = INSTRUMENT[target]
            ref = stem_audio(root, track_id, inst)[offset:offset + L].T
            regions = truth[track_id].stems.get(inst, [])
            if not regions or not ref.any():             # silent here
                assert not targets[k].any()
            else:
                g, swapped, res = fit_gain(targets[k], ref)
                assert res < 1e-5 and 0.25 <= g <= 1.25
            # frame j of the chunk is centred on track sample offset + j*hop: its label is the
            # truth at that very sample
            g_track = gate(regions, truth[track_id].num_samples)
            expected = np.array([g_track[offset + j * HOP] for j in range(T)], np.float32)
            if known[k]:
                np.testing.assert_array_equal(activity[k], expected)
                checked += 1
    assert checked > 30


def test_chunk_stft_frames_are_the_tracks_frames(corpus):
    """|STFT(chunk)| frame j == |STFT(track)| frame m + j away from the chunk's edges."""
    root, truth = corpus
    ds = TrainChunks(root, cfg(), augment=False)
    n_fft = 512
    _, targets, _, _ = ds[3]
    slots, _ = ds.plan(3)
    track_id, m = slots[0]
    full = torch.from_numpy(stem_audio(root, track_id, "lead_vocals").T.copy())
    chunk_mag = magnitude(targets[0], n_fft, HOP)
    track_mag = magnitude(full, n_fft, HOP)
    T = chunk_mag.shape[-1]
    edge = n_fft // 2 // HOP                                       # frames touching the padding
    inner = slice(edge, T - edge - 1)
    torch.testing.assert_close(chunk_mag[..., inner], track_mag[..., m + edge:m + T - edge - 1],
                               rtol=1e-4, atol=1e-4)


def test_label_boundary_at_an_exact_frame_centre(tmp_path):
    """A stem that starts exactly on frame 40's centre is active from frame 40; one sample later,
    from frame 41."""
    sr, s = 44100, 2.0
    on = 40 * HOP / sr
    later = (40 * HOP + 1) / sr
    tracks = [
        FixtureTrack("exact", "train", s, {"lead_vocals": [(on, s)], "drums": [(0.0, s)]}),
        FixtureTrack("later", "train", s, {"lead_vocals": [(later, s)], "drums": [(0.0, s)]}),
        FixtureTrack("v", "valid", s, {"lead_vocals": [(0.0, s)]}),
    ]
    write_fixture_corpus(tmp_path, tracks, hop=HOP)
    c = cfg(targets=("vocals",), chunk_samples=int(1.0 * sr), random_track_mix=False)
    ds = TrainChunks(tmp_path, c, augment=False)
    seen = set()
    for i in range(40):
        tid, m = ds.plan(i)[0][0]
        _, _, _, activity = ds[i]
        first_on = 40 if "exact" in tid else 41
        expected = (np.arange(m, m + c.num_frames) >= first_on).astype(np.float32)
        np.testing.assert_array_equal(activity[0].numpy(), expected)
        seen.add(("exact" in tid, m < 40 < m + c.num_frames))
    assert (True, True) in seen and (False, True) in seen


def test_mixture_is_the_sum_of_the_slots(corpus):
    root, truth = corpus
    ds = TrainChunks(root, cfg())
    L = ds.cfg.chunk_samples
    for index in range(4):
        mixture, targets, _, _ = (t.numpy() for t in ds[index])
        slots, _ = ds.plan(index)
        rest_tid, m = slots[-1]
        c = Corpus(root)
        rest_insts = [i for i in c.track(rest_tid)["instruments"] if i not in INSTRUMENT.values()]
        rest = sum((stem_audio(root, rest_tid, i) for i in rest_insts), np.zeros((c.track(rest_tid)["num_samples"], 2), np.float32))
        rest = rest[m * HOP:m * HOP + L].T
        residual = mixture - targets.sum(0)
        if rest_insts and np.abs(rest).max() > 0:
            g, _, res = fit_gain(residual, rest)
            assert res < 1e-5 and 0.25 <= g <= 1.25
        else:
            assert np.abs(residual).max() < 1e-6


def test_random_track_mixing_draws_different_tracks(corpus):
    root, _ = corpus
    ds = TrainChunks(root, cfg())
    mixed = sum(len({tid for tid, _ in ds.plan(i)[0]}) > 1 for i in range(20))
    assert mixed >= 18
    same = TrainChunks(root, cfg(random_track_mix=False))
    assert all(len({tid for tid, _ in same.plan(i)[0]}) == 1 for i in range(20))


def test_unknown_targets_are_masked_and_never_drawn(corpus):
    root, _ = corpus
    ds = TrainChunks(root, cfg())
    unknown = {"electric_guitar", "acoustic_guitar", "piano"}
    found = 0
    for i in range(300):
        slots, _ = ds.plan(i)
        for k, target in enumerate(TARGETS):
            if target in unknown:
                assert "musdb" not in slots[k][0]      # its slot never takes a track that hides it
        if "musdb" in slots[-1][0]:                    # the rest slot holds MUSDB's `other`
            _, _, known, activity = ds[i]
            for k, target in enumerate(TARGETS):
                assert bool(known[k]) == (target not in unknown)
                assert bool(torch.isnan(activity[k]).all()) == (target in unknown)
            found += 1
            if found >= 3:
                break
    assert found >= 3


def test_present_draw_takes_only_tracks_where_the_target_plays(corpus):
    """train.target_tracks: present -> a target's slot comes from a track whose labels say it plays
    (here acoustic guitar: only song01 and song04; electric guitar: not song00 / song03); the
    default draw (known) also takes the tracks without it, whose slots are silent."""
    root, truth = corpus
    plays = {t: {tid for tid, tr in truth.items() if tr.split == "train" and tr.stems.get(INSTRUMENT[t])}
             for t in TARGETS}
    assert len(plays["acoustic_guitar"]) == 2
    present = TrainChunks(root, cfg(target_tracks="present"))
    known = TrainChunks(root, cfg())
    drawn = {t: set() for t in TARGETS}
    drawn_known = {t: set() for t in TARGETS}
    for i in range(200):
        for k, t in enumerate(TARGETS):
            drawn[t].add(present.plan(i)[0][k][0])
            drawn_known[t].add(known.plan(i)[0][k][0])
    assert drawn == plays
    assert drawn_known["acoustic_guitar"] > plays["acoustic_guitar"]
    with pytest.raises(ConfigError, match="target_tracks"):
        ChunkConfig.from_params({"chunk_seconds": 1.0, "target_tracks": "playing"}, TARGETS, HOP, 44100)


def test_active_offsets_draw_chunks_where_the_target_plays(corpus):
    """train.target_offsets: active -> every target slot's chunk holds an active frame of its
    target (by the fixture's exact labels, not the corpus reader), partly active chunks included;
    the uniform default also draws silent ones. The rest slot and the tracks are drawn as before."""
    root, truth = corpus
    n_frames = cfg().num_frames
    by_native = {tid: tr for tid, tr in truth.items()}
    active = TrainChunks(root, cfg(target_tracks="present", target_offsets="active"))
    uniform = TrainChunks(root, cfg(target_tracks="present"))
    silent_uniform = partial = 0
    for i in range(150):
        slots_a, _ = active.plan(i)
        slots_u, _ = uniform.plan(i)
        assert [tid for tid, _ in slots_a] == [tid for tid, _ in slots_u]   # same tracks
        assert slots_a[-1] == slots_u[-1]                                 # same rest slot
        for k, t in enumerate(TARGETS):
            tr = by_native[slots_a[k][0]]
            regions = [r for inst, rs in tr.stems.items() if inst == INSTRUMENT[t] for r in rs]
            labels = frame_labels(regions, tr.num_samples, HOP) > 0.5
            chunk = labels[slots_a[k][1]: slots_a[k][1] + n_frames]
            assert chunk.any(), (i, t, slots_a[k])
            partial += int(not chunk.all())
            silent_uniform += int(not labels[slots_u[k][1]: slots_u[k][1] + n_frames].any())
    assert partial > 50 and silent_uniform > 20
    i = next(i for i in range(50) if "musdb" not in active.plan(i)[0][-1][0])
    _, _, known, activity = active[i]
    assert bool(known.all()) and bool((activity > 0.5).any(dim=1).all())   # its labels agree
    with pytest.raises(ConfigError, match="target_offsets"):
        ChunkConfig.from_params({"chunk_seconds": 1.0, "target_offsets": "busy"}, TARGETS, HOP, 44100)


def test_active_starts_by_hand():
    from iass.training.data import active_starts

    labels = np.zeros(20)
    labels[12:14] = 1
    # 10 chunk frames (hop 1, chunk 9 samples), 20 samples -> starts 0..11; chunk s covers s..s+9
    np.testing.assert_array_equal(active_starts(labels, 20, 9, 1), np.arange(3, 12))
    assert len(active_starts(np.zeros(20), 20, 9, 1)) == 0


def test_without_track_mixing_an_unknown_target_is_masked(corpus):
    root, _ = corpus
    ds = TrainChunks(root, cfg(random_track_mix=False))
    for i in range(300):
        slots, _ = ds.plan(i)
        if "musdb" in slots[0][0]:
            _, targets, known, activity = ds[i]
            assert known.tolist() == [True, True, True, False, False, True][:3] + [False, False, False]
            assert torch.isnan(activity[3:]).all() and not torch.isnan(activity[:3]).any()
            return
    pytest.fail("no example drew the MUSDB-like track")


def test_valid_chunks_are_fixed_and_sum_to_the_mixture_file(corpus):
    root, _ = corpus
    ds = ValidChunks(root, cfg(), chunks_per_track=2)
    c = Corpus(root)
    assert len(ds) == 2 * len(c.track_ids(split="valid"))
    for i in range(len(ds)):
        tid, m = ds.items[i]
        mixture, targets, known, _ = ds[i]
        ref, _ = sf.read(str(root / c.track(tid)["mixture_path"]), dtype="float32", always_2d=True)
        ref = ref[m * HOP:m * HOP + ds.cfg.chunk_samples].T
        np.testing.assert_allclose(mixture.numpy(), ref, atol=1e-6)
        assert known.all()
    again = ValidChunks(root, cfg(), chunks_per_track=2)
    for i in range(len(ds)):
        torch.testing.assert_close(ds[i][0], again[i][0], rtol=0, atol=0)


def test_same_batches_for_any_number_of_workers_and_ranks(corpus):
    root, _ = corpus
    ds = TrainChunks(root, cfg(chunk_samples=4096))

    def batches(workers, rank=0, world=1):
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=StepBatchSampler(2, 5, 4, rank, world), **loader_options(workers))
        return [b for b in loader]

    single = batches(0)
    threaded = batches(2)
    r0, r1 = batches(0, 0, 2), batches(0, 1, 2)
    for a, b, p, q in zip(single, threaded, r0, r1):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(a[0], torch.cat([p[0], q[0]]), rtol=0, atol=0)
    # a resumed stream (from step 3) continues exactly
    resumed = [b for b in torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(3, 5, 4))]
    torch.testing.assert_close(resumed[0][0], single[1][0], rtol=0, atol=0)


def test_dataset_pickles_without_corpus_or_audio(corpus):
    root, _ = corpus
    ds = TrainChunks(root, cfg())
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000
    assert pickle.loads(blob)._corpus is None


def test_memory_does_not_grow_with_examples(corpus):
    root, _ = corpus
    ds = TrainChunks(root, cfg())
    for i in range(20):
        ds[i]
    tracemalloc.start()
    for i in range(20, 70):
        ds[i]
    after_50, _ = tracemalloc.get_traced_memory()
    for i in range(70, 170):
        ds[i]
    after_150, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after_150 - after_50 < 2_000_000


def test_fixture_labels_are_independent_of_the_code_under_test():
    """The ground truth the tests use: frame t active iff sample t*hop is in a region."""
    lab = frame_labels([(1.0, 2.0)], 3 * 44100, 1024)
    centres = np.arange(len(lab)) * 1024
    np.testing.assert_array_equal(lab, ((centres >= 44100) & (centres < 88200)).astype(np.float32))
