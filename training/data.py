"""Training data from a built corpus: random chunks, random track mixing, gain and channel swap.

Everything is read through :class:`iass.pipelines.corpus_format.Corpus` (the one module that owns
the corpus format). Memory does not grow with the corpus: the dataset keeps only the small
per-track metadata it samples from, and reads each chunk's audio with partial WAV reads.

Sampling is a pure function of ``(seed, index)``: sample ``i`` of the training stream draws its
tracks, offsets, gains and swaps from ``numpy.random.default_rng([seed, i])``. So the stream does
not depend on the number of worker processes or ranks, and a resumed run continues it exactly by
starting at the saved position (see :class:`StepBatchSampler`).

A training example is a mixture built from ``K + 1`` slots: one per target (the stems of that
target in a randomly drawn track; Open-Unmix's random track mixing) and a ``rest`` slot (every
other instrument of another random track). ``train.target_tracks: present`` draws a target's slot
only from the tracks where that target plays: in MedleyDB-style corpora most tracks have no piano
or acoustic guitar, so Open-Unmix's draw (``known``: any track) makes their slots mostly silence.
``train.target_offsets: active`` then draws the slot's offset uniformly among the chunk positions
where the target plays in at least one frame (a piano playing 20 % of a song otherwise gives
mostly silent chunks even from its own tracks; partly active chunks, its entries and exits,
stay in). The ``rest`` slot's offset is always uniform. Activity labels follow their stems. Frame ``j`` of a chunk that starts at sample ``o = m * hop`` is centred on track sample ``o + j * hop``: exactly
the track's label frame ``m + j`` (``torch.stft(center=True)`` convention; see
``corpus_format.num_frames``), which is why chunk offsets are multiples of the hop.

Unknowns: a target whose audio the source corpus does not separate (``Corpus.target_known``
False, e.g. MUSDB's piano inside ``other``) is never drawn for its own slot; when the ``rest``
slot's track leaves it unknown, that target's audio is unknown for the whole example
(``known[k] = False``, masked out of the MSE) and its activity is NaN (masked out of the BCE).

Pitch (``ChunkConfig.pitch``, on when the run has a pitch head): each example gains a 5th
element, the targets' piano rolls ``(K, T, 88)`` float32 (key ``j`` = MIDI ``21 + j``): 1/0 from
the notes of the target slot's track (``Corpus.read_pitch``, frames as the activity labels),
NaN where unknown (a track without pitch labels, an unpitched target such as drums, a target
unknown in the example). With ``pitch`` off the examples are exactly the 4-tuples they were.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from iass.errors import ConfigError, CorpusError
from iass.training.config import TARGET_OFFSETS, TARGET_TRACKS, TrainConfig  # noqa: F401 (re-exported)

CHANNELS = 2

#: Worker processes are spawned, never forked: the parent has polars (and torch's OpenMP) thread
#: pools, and a forked child inherits their locks in whatever state they were (a deadlock we hit
#: on the first real corpus). The dataset pickles small (no corpus, no audio), so spawning is cheap.
WORKER_CONTEXT = "spawn"


def loader_options(workers: int) -> dict:
    """DataLoader keyword arguments for ``workers`` worker processes (0 = in the main process).

    Workers hand their batches over through a reused shared-memory ring
    (:mod:`iass.training.shm_collate`), not a fresh shared block per batch."""
    if workers <= 0:
        return {"num_workers": 0}
    from iass.training import shm_collate

    return {"num_workers": int(workers), "multiprocessing_context": WORKER_CONTEXT,
            "prefetch_factor": shm_collate.PREFETCH, "collate_fn": shm_collate.collate}


@dataclass(frozen=True)
class ChunkConfig:
    """What the datasets draw. Built from params.yaml by :meth:`TrainConfig.chunk_config`; the
    defaults here are :class:`TrainConfig`'s, except ``gain``: a ChunkConfig built by hand
    augments like Open-Unmix, a params file without ``train.gain`` draws no random gain."""

    targets: tuple[str, ...]
    chunk_samples: int
    hop: int
    seed: int = TrainConfig.seed
    random_track_mix: bool = TrainConfig.random_track_mix
    gain: tuple[float, float] = (0.25, 1.25)   # Open-Unmix's random source gain
    channel_swap: bool = TrainConfig.channel_swap
    target_tracks: str = TrainConfig.target_tracks    # known | present: the pool each target slot is drawn from
    target_offsets: str = TrainConfig.target_offsets  # uniform | active: where in that track a target slot starts
    pitch: bool = False   # examples carry the targets' piano rolls (a 5th element; see _example)

    @property
    def num_frames(self) -> int:
        """STFT frames of a chunk (center=True): one label per frame."""
        return self.chunk_samples // self.hop + 1

    @classmethod
    def from_params(cls, train: dict, targets, hop: int, sample_rate: int,
                    pitch: bool = False) -> "ChunkConfig":
        """From a params ``train`` section (through :class:`TrainConfig`: its defaults, its checks);
        ``pitch``: the run trains a pitch head (``model.iass.pitch_weight > 0``)."""
        cfg = TrainConfig.from_section(train).chunk_config(targets, hop, sample_rate)
        return replace(cfg, pitch=bool(pitch)) if pitch else cfg


@dataclass
class _TrackInfo:
    num_samples: int
    rest: tuple[str, ...]                # instruments of the track under no target
    unknown_targets: frozenset[str]      # targets whose audio this track does not separate


@dataclass
class SplitIndex:
    """The per-track facts needed to draw examples from one split (small; no audio)."""

    track_ids: list[str]
    info: dict[str, _TrackInfo]
    eligible: dict[str, list[str]] = field(default_factory=dict)  # target -> tracks where known
    present: dict[str, list[str]] = field(default_factory=dict)   # target -> tracks where it plays

    @classmethod
    def build(cls, corpus, split: str, targets, draw: str = "known") -> "SplitIndex":
        ids = corpus.track_ids(split=split)
        if not ids:
            raise CorpusError(f"{corpus.root}: no tracks in split {split!r}")
        tax = corpus.taxonomy
        for t in targets:
            tax.check(t)
        info = {}
        for tid in ids:
            row = corpus.track(tid)
            instruments = tuple(row["instruments"] or ())
            unknown = frozenset(t for t in targets if not corpus.target_known(tid, t))
            # a target the track does not separate keeps its stems in the rest (a MedleyDB
            # effects stem under the residual target `other` stays in the mixture)
            rest = tuple(i for i in instruments
                         if not any(tax.covers(t, i) for t in targets if t not in unknown))
            info[tid] = _TrackInfo(int(row["num_samples"]), rest, unknown)
        eligible = {t: [tid for tid in ids if t not in info[tid].unknown_targets] for t in targets}
        present = ({t: [tid for tid in eligible[t] if corpus.target_plays(tid, t)] for t in targets}
                   if draw == "present" else {})
        return cls(ids, info, eligible, present)

    def pool(self, target: str) -> list[str]:
        """The tracks a target slot is drawn from: built with ``draw="present"``, those where
        its activity labels say it plays somewhere; else (``known``) every track whose audio of
        the target is known (Open-Unmix's draw: a track without the target gives a silent
        slot). An empty pool falls back to the wider one."""
        return self.present.get(target) or self.eligible[target] or self.track_ids


def _draw_start_frame(rng: np.random.Generator, num_samples: int, chunk: int, hop: int) -> int:
    """A random chunk start, in frames (so the chunk's frames are the track's label frames)."""
    last = max(num_samples - chunk, 0) // hop
    return int(rng.integers(0, last + 1))


def active_starts(labels: np.ndarray, num_samples: int, chunk: int, hop: int) -> np.ndarray:
    """The chunk starts (frames, as :func:`_draw_start_frame` draws them) whose chunk holds at
    least one active label frame; empty when the target never plays in reach of a chunk."""
    last = max(num_samples - chunk, 0) // hop
    n = chunk // hop + 1                                  # frames of a chunk
    active = np.nan_to_num(np.asarray(labels, dtype=np.float64)) > 0.5
    padded = np.zeros(last + n, dtype=np.int64)
    m = min(len(active), len(padded))
    padded[:m] = active[:m]
    c = np.concatenate([[0], np.cumsum(padded)])
    starts = np.arange(last + 1)
    return starts[c[starts + n] - c[starts] > 0]


class _CorpusDataset(Dataset):
    """Opens the corpus lazily in each process (workers get a pickled copy without it)."""

    def __init__(self, corpus_root: str | Path, split: str, cfg: ChunkConfig):
        self.corpus_root = str(corpus_root)
        self.split = split
        self.cfg = cfg
        self._corpus = None
        self._index: SplitIndex | None = None
        self._starts: dict[tuple[str, str], np.ndarray] = {}
        self._labels: dict[tuple[str, str], np.ndarray] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_corpus"] = None  # polars tables and caches stay out of worker pickles
        state["_starts"] = {}
        state["_labels"] = {}
        state.pop("_slot_buf", None)
        state.pop("_rest_buf", None)
        return state

    @property
    def corpus(self):
        if self._corpus is None:
            from iass.pipelines.corpus_format import Corpus

            self._corpus = Corpus(self.corpus_root)
        return self._corpus

    @property
    def index(self) -> SplitIndex:
        if self._index is None:
            self._index = SplitIndex.build(self.corpus, self.split, self.cfg.targets,
                                           self.cfg.target_tracks)
        return self._index

    def _target_start(self, rng: np.random.Generator, track_id: str, target: str) -> int:
        """A target slot's start frame: uniform, or (``target_offsets: active``) uniform over the
        starts whose chunk holds an active frame of the target (uniform when there is none)."""
        cfg = self.cfg
        n = self.index.info[track_id].num_samples
        if cfg.target_offsets != "active" or target in self.index.info[track_id].unknown_targets:
            return _draw_start_frame(rng, n, cfg.chunk_samples, cfg.hop)
        key = (track_id, target)
        if key not in self._starts:
            labels = self.corpus.read_activity(track_id, [target])[0]
            self._starts[key] = active_starts(labels, n, cfg.chunk_samples, cfg.hop)
        starts = self._starts[key]
        if not len(starts):
            return _draw_start_frame(rng, n, cfg.chunk_samples, cfg.hop)
        return int(starts[rng.integers(len(starts))])

    # one slot --------------------------------------------------------------------------------
    def _target_slot(self, track_id: str, target: str, start_frame: int):
        """Audio (L, 2) and labels (T,) of ``target`` in a track, from frame ``start_frame``."""
        cfg = self.cfg
        audio = self.corpus.read_target(track_id, target, start_frame * cfg.hop, cfg.chunk_samples,
                                        out=self._slot_buffer())
        return audio, _frames(self._track_labels(track_id, target), start_frame, cfg.num_frames)

    def _track_labels(self, track_id: str, target: str) -> np.ndarray:
        """The target's activity over the whole track (a bounded cache: one row per pair)."""
        key = (track_id, target)
        if key not in self._labels:
            if len(self._labels) >= 512:
                self._labels.clear()
            self._labels[key] = self.corpus.read_activity(track_id, [target])[0]
        return self._labels[key]

    def _slot_buffer(self) -> np.ndarray:
        """The (L, 2) buffer a slot's audio is summed in before it is augmented into the example."""
        return self._buffer("_slot_buf", (self.cfg.chunk_samples, CHANNELS))

    def _buffer(self, name: str, shape) -> np.ndarray:
        """A float32 work buffer kept by this process (reused: fresh pages cost more than the
        work done in them; they stay out of worker pickles)."""
        buf = self.__dict__.get(name)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype=np.float32)
            self.__dict__[name] = buf
        return buf

    def __getitems__(self, indices: list[int]):
        """A batch (the DataLoader's batched fetch): in a worker process the examples are written
        straight into a slot of its shared ring (:func:`iass.training.shm_collate.fill`)."""
        from iass.training import shm_collate

        return shm_collate.fill(self._write_item, indices)

    def _write_item(self, index: int, out=None):
        raise NotImplementedError

    def _rest_slot(self, track_id: str, start_frame: int) -> np.ndarray:
        cfg = self.cfg
        out = self._slot_buffer()
        out[:] = 0.0
        return self.corpus.add_instruments(out, track_id, self.index.info[track_id].rest,
                                           start_frame * cfg.hop)

    def _example(self, slots: list[tuple[str, int]], rng: np.random.Generator | None, out=None):
        """slots: (track, start frame) for each target, then the rest slot.

        -> mixture (2, L), targets (K, 2, L), known (K,) bool, activity (K, T) with NaN unknown;
        with ``cfg.pitch`` also pitch (K, T, 88) float32: 1/0 from the target slot's track's notes
        (:meth:`Corpus.read_pitch`, frames past the track's end silent), NaN where unknown (the
        track has no pitch labels, an unpitched target, or the target is unknown in the example,
        ``known[k]`` False). Reading pitch draws nothing from ``rng``: the first four elements
        are the same with pitch on or off. Written into ``out`` (those arrays: a batch's row, see
        :meth:`__getitems__`) when given."""
        cfg = self.cfg
        info = self.index.info
        k_targets = len(cfg.targets)
        if out is None:
            out = (np.empty((CHANNELS, cfg.chunk_samples), dtype=np.float32),
                   np.zeros((k_targets, CHANNELS, cfg.chunk_samples), dtype=np.float32),
                   np.ones(k_targets, dtype=bool), np.zeros((k_targets, cfg.num_frames), dtype=np.float32))
            if cfg.pitch:
                out += (np.empty((k_targets, cfg.num_frames, _num_keys()), dtype=np.float32),)
        mixture, targets, known, activity = out[:4]
        pitch = out[4] if cfg.pitch else None
        known[:] = True
        if pitch is not None:
            pitch[:] = np.nan
        for k, (target, (tid, start)) in enumerate(zip(cfg.targets, slots[:-1])):
            if target in info[tid].unknown_targets:  # only without track mixing
                known[k] = False
                activity[k] = np.nan
                targets[k] = 0.0
                continue
            audio, labels = self._target_slot(tid, target, start)
            self._augment(audio, rng, out=targets[k])
            activity[k] = labels
            if pitch is not None:
                pitch[k] = self._pitch_slot(tid, target, start)
        rest_tid, rest_start = slots[-1]
        rest = self._augment(self._rest_slot(rest_tid, rest_start), rng, out=self._buffer("_rest_buf", (CHANNELS, cfg.chunk_samples)))
        for k, target in enumerate(cfg.targets):
            if target in info[rest_tid].unknown_targets:
                # the rest slot may hold this target (e.g. a piano inside MUSDB's `other`)
                known[k] = False
                activity[k] = np.nan
        np.sum(targets, axis=0, out=mixture)
        mixture += rest
        result = (torch.from_numpy(mixture), torch.from_numpy(targets), torch.from_numpy(known),
                  torch.from_numpy(activity))
        if pitch is not None:
            pitch[~known] = np.nan
            result += (torch.from_numpy(pitch),)
        return result

    def _pitch_slot(self, track_id: str, target: str, start_frame: int) -> np.ndarray:
        """(T, 88) float32 roll of ``target`` in a track from ``start_frame``; NaN if unknown."""
        cfg = self.cfg
        roll = self.corpus.read_pitch(track_id, target, start_frame, cfg.num_frames)
        if roll is None:
            return np.full((cfg.num_frames, _num_keys()), np.nan, dtype=np.float32)
        return roll.astype(np.float32)

    def _augment(self, audio: np.ndarray, rng: np.random.Generator | None,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Open-Unmix's source augmentations: a random gain, then a channel swap with p = 0.5.

        audio (L, 2) -> (2, L) float32, written into ``out`` when given (one pass, no copies)."""
        if out is None:
            out = np.empty(audio.shape[::-1], dtype=np.float32)
        src = audio.T
        if rng is None:
            np.copyto(out, src)
            return out
        lo, hi = self.cfg.gain
        gain = np.float32(lo + rng.random() * (hi - lo))
        if self.cfg.channel_swap and rng.random() < 0.5:
            src = src[::-1]
        return np.multiply(src, gain, out=out)


def _num_keys() -> int:
    """The piano roll's keys (88), from the corpus format (imported when first needed: importing
    this module stays free of pyarrow)."""
    from iass.pipelines.corpus_format import NUM_KEYS

    return NUM_KEYS


def _frames(labels: np.ndarray, start: int, n: int) -> np.ndarray:
    """labels[start : start + n], frames past the track's end are silence (0)."""
    out = np.zeros(n, dtype=np.float32)
    part = labels[start:start + n]
    out[: len(part)] = part
    return out


class TrainChunks(_CorpusDataset):
    """Random training examples; item ``i`` is a pure function of ``(seed, i)``."""

    def __init__(self, corpus_root, cfg: ChunkConfig, split: str = "train", augment: bool = True):
        super().__init__(corpus_root, split, cfg)
        self.augment = augment

    def __len__(self) -> int:  # an endless stream; the sampler decides where to read
        return 2**62

    def plan(self, index: int) -> tuple[list[tuple[str, int]], np.random.Generator]:
        """The tracks and start frames of example ``index`` (and the rng for its augmentations)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, int(index)])
        ids = self.index.track_ids
        info = self.index.info
        slots: list[tuple[str, int]] = []
        if cfg.random_track_mix:
            for target in cfg.targets:
                pool = self.index.pool(target)
                tid = pool[rng.integers(len(pool))]
                slots.append((tid, self._target_start(rng, tid, target)))
            tid = ids[rng.integers(len(ids))]
            slots.append((tid, _draw_start_frame(rng, info[tid].num_samples, cfg.chunk_samples, cfg.hop)))
        else:
            tid = ids[rng.integers(len(ids))]
            start = _draw_start_frame(rng, info[tid].num_samples, cfg.chunk_samples, cfg.hop)
            slots = [(tid, start)] * (len(cfg.targets) + 1)
        return slots, rng

    def __getitem__(self, index: int):
        return self._write_item(index)

    def _write_item(self, index: int, out=None):
        slots, rng = self.plan(index)
        return self._example(slots, rng if self.augment else None, out)


class ValidChunks(_CorpusDataset):
    """Fixed validation examples: ``chunks_per_track`` evenly spaced chunks of each track, all
    slots from the same track, no augmentation. The same set every epoch and every run."""

    def __init__(self, corpus_root, cfg: ChunkConfig, split: str = "valid",
                 chunks_per_track: int = TrainConfig.valid_chunks_per_track):
        super().__init__(corpus_root, split, cfg)
        self.chunks_per_track = int(chunks_per_track)
        self._items: list[tuple[str, int]] | None = None

    @property
    def items(self) -> list[tuple[str, int]]:
        if self._items is None:
            cfg, items = self.cfg, []
            for tid in self.index.track_ids:
                last = max(self.index.info[tid].num_samples - cfg.chunk_samples, 0) // cfg.hop
                starts = np.linspace(0, last, self.chunks_per_track).round().astype(int)
                items += [(tid, int(s)) for s in dict.fromkeys(starts.tolist())]
            self._items = items
        return self._items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self._write_item(index)

    def _write_item(self, index: int, out=None):
        slot = self.items[index]
        return self._example([slot] * (len(self.cfg.targets) + 1), None, out)


class StepBatchSampler(Sampler):
    """Batches of global example indices for steps ``start_step .. stop_step - 1``.

    Step ``s`` uses examples ``s * batch .. s * batch + batch - 1``; with ``world`` ranks, rank
    ``r`` takes its contiguous share, so the global batch is the same for any number of ranks."""

    def __init__(self, start_step: int, stop_step: int, batch_size: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ConfigError(f"train.batch_size {batch_size} is not divisible by {world} processes")
        self.start_step, self.stop_step = int(start_step), int(stop_step)
        self.batch_size, self.rank, self.world = int(batch_size), int(rank), int(world)

    def __len__(self) -> int:
        return max(self.stop_step - self.start_step, 0)

    def __iter__(self):
        per_rank = self.batch_size // self.world
        for step in range(self.start_step, self.stop_step):
            first = step * self.batch_size + self.rank * per_rank
            yield list(range(first, first + per_rank))


def magnitude(audio: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor | None = None) -> torch.Tensor:
    """(..., samples) -> (..., n_fft // 2 + 1, frames) magnitude; Hann, center=True (reflect).

    Frame ``t`` is centred on sample ``t * hop``: the corpus' activity frame convention."""
    if window is None:
        window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    shape = audio.shape
    spec = torch.stft(audio.reshape(-1, shape[-1]), n_fft=n_fft, hop_length=hop, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    return spec.abs().reshape(shape[:-1] + spec.shape[-2:])
