"""The loader's fast paths give the same bytes as the plain path they replace.

* corpus WAV reads by ``pread`` (``RawWav``) == libsndfile's, at any offset, past the end too;
* a training example == one assembled here independently (soundfile reads of every stem, the
  sums, Open-Unmix's gain and channel swap drawn from the example's own rng): the stream of
  batches for a seed is the same as before the loader was optimised;
* batches through worker processes (the shared-memory ring) == batches built in-process, also
  when the caller keeps every batch (a kept batch is never overwritten by a later one).
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from corpus_fixtures import write_fixture_corpus
from iass.io import write_wav
from iass.pipelines.corpus_format import Corpus
from iass.pipelines.raw_wav import RawWav
from iass.training.data import ChunkConfig, StepBatchSampler, TrainChunks, ValidChunks, loader_options

HOP = 256
TARGETS = ("vocals", "drums", "bass", "piano")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_fixture_corpus(root, hop=HOP)
    return root


def cfg(**kw) -> ChunkConfig:
    base = dict(targets=TARGETS, chunk_samples=int(0.5 * 44100), hop=HOP, seed=11)
    base.update(kw)
    return ChunkConfig(**base)


def test_raw_wav_reads_what_libsndfile_reads(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((5000, 2)).astype(np.float32)
    audio[7] = -0.0                       # signed zeros survive
    write_wav(tmp_path / "a.wav", audio, 44100, "FLOAT")
    raw = RawWav.open(tmp_path / "a.wav")
    assert raw is not None and raw.frames == 5000 and raw.channels == 2
    for start, n in ((0, 5000), (1, 100), (4990, 64), (5000, 8), (7000, 3)):
        out = np.full((n, 2), 9.0, dtype=np.float32)
        raw.read_into(out, start)
        ref, _ = sf.read(str(tmp_path / "a.wav"), start=min(start, 5000), frames=n, dtype="float32",
                         always_2d=True, fill_value=0.0)
        assert out.tobytes() == ref.tobytes()
    raw.close()
    # what it does not read as raw float32 is left to libsndfile
    sf.write(str(tmp_path / "pcm.wav"), audio.clip(-1, 1), 44100, subtype="PCM_16")
    assert RawWav.open(tmp_path / "pcm.wav") is None
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00")
    assert RawWav.open(tmp_path / "junk.wav") is None


def _reference_example(ds: TrainChunks, index: int):
    """Example ``index`` assembled without the code under test's reading or mixing."""
    c = Corpus(ds.corpus_root)
    conf, L = ds.cfg, ds.cfg.chunk_samples
    slots, rng = ds.plan(index)       # which tracks and offsets: the sampling under test elsewhere

    def read(tid, inst, start):
        rows = c.stems.filter((c.stems["track_id"] == tid) & (c.stems["instrument"] == inst))
        if rows.height == 0:
            return np.zeros((L, 2), np.float32)
        a, _ = sf.read(str(ds.corpus_root + "/" + rows["path"][0]), start=start, frames=L,
                       dtype="float32", always_2d=True, fill_value=0.0)
        return a

    def augment(a):
        a = a * np.float32(conf.gain[0] + rng.random() * (conf.gain[1] - conf.gain[0]))
        if conf.channel_swap and rng.random() < 0.5:
            a = a[:, ::-1]
        return np.ascontiguousarray(a.T)

    targets = np.zeros((len(conf.targets), 2, L), np.float32)
    for k, (target, (tid, start)) in enumerate(zip(conf.targets, slots[:-1])):
        if target in ds.index.info[tid].unknown_targets:
            continue
        acc = np.zeros((L, 2), np.float32)
        for inst in c.target_instruments(tid, target):
            acc += read(tid, inst, start * conf.hop)
        targets[k] = augment(acc)
    rest_tid, rest_start = slots[-1]
    acc = np.zeros((L, 2), np.float32)
    for inst in ds.index.info[rest_tid].rest:
        acc += read(rest_tid, inst, rest_start * conf.hop)
    return targets.sum(0) + augment(acc), targets


@pytest.mark.parametrize("kw", [{}, {"target_tracks": "present", "target_offsets": "active"},
                                {"random_track_mix": False}])
def test_examples_equal_an_independent_assembly(corpus, kw):
    ds = TrainChunks(str(corpus), cfg(**kw))
    for index in (0, 1, 5, 123, 10**9 + 7):
        mixture, targets, known, activity = ds[index]
        ref_mix, ref_targets = _reference_example(ds, index)
        assert targets.numpy().tobytes() == ref_targets.tobytes()
        assert mixture.numpy().tobytes() == ref_mix.tobytes()
        assert known.dtype == torch.bool and activity.shape == (len(TARGETS), ds.cfg.num_frames)


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.numpy().tobytes() == y.numpy().tobytes()


def test_worker_batches_equal_in_process_batches_and_kept_ones_never_change(corpus):
    from iass.training import shm_collate

    ds = TrainChunks(str(corpus), cfg())
    steps, batch = shm_collate.SLOTS + 1, 3   # one worker, every batch kept: more than its slots
    inproc = list(torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(0, steps, batch),
                                              **loader_options(0)))
    it = iter(torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(0, steps, batch),
                                          **loader_options(1)))
    first = next(it)
    view = first[1][:, 0]                 # a view keeps the batch's slot from being reused
    del first
    kept = list(it)                       # the last one finds no free slot: default_collate
    assert len(kept) == steps - 1
    assert view.numpy().tobytes() == inproc[0][1][:, 0].numpy().tobytes()
    for a, b in zip(kept, inproc[1:]):
        _assert_same(a, b)


def test_validation_batches_through_workers(corpus):
    ds = ValidChunks(str(corpus), cfg(), chunks_per_track=2)
    idx = list(range(len(ds)))
    sub = torch.utils.data.Subset(ds, idx)
    workers = list(torch.utils.data.DataLoader(sub, batch_size=2, **loader_options(1)))
    inproc = list(torch.utils.data.DataLoader(sub, batch_size=2, **loader_options(0)))
    for a, b in zip(workers, inproc):
        _assert_same(a, b)
