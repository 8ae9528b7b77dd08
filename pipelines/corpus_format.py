"""The corpus format: ONE module that the corpus writer and every reader import.

Layout of a built corpus (``datasets/corpus/`` by default)::

    manifest.json                 corpus version, taxonomy hash, params, counts, code version;
                                  ``snapshot``: the folder holding this version's tables
    .versions/<version16>/        the tables below (and taxonomy, manifest) of one version; the
                                  root copies are hard links to the current one
    taxonomy.yaml                 copy of the taxonomy the corpus was built with
    tracks.parquet                one row per track           (TRACKS_SCHEMA)
    stems.parquet                 one row per (track, canonical instrument) with audio (STEMS_SCHEMA)
    activity/part-<shard>.parquet one row per (track, instrument present, frame) (ACTIVITY_SCHEMA)
    rejects.parquet               quarantined tracks and why  (REJECTS_SCHEMA)
    pitch.parquet                 one row per (track, instrument) whose pitch is known (PITCH_SCHEMA)
    notes/part-<shard>.parquet    note events of those instruments (NOTES_SCHEMA)
                                  (pitch.parquet and notes/: only when some track has pitch labels)
    audio/<shard>/<track_id>.<key>/mixture.wav, <instrument>.wav   44.1 kHz stereo float WAV
                                  (<key>: 8 hex of the track's source content; new audio, new folder)

Frames follow the model's STFT with ``center=True``: frame ``t`` is centred on sample
``t * hop`` and a track of ``n`` samples has ``n // hop + 1`` frames (``torch.stft`` convention).

Activity semantics: for an instrument with a row, ``active`` is True/False per frame (null where
unknown). An instrument of the taxonomy with no row in a track is silent (inactive) in it, unless
it is listed in the track's ``unknown_instruments`` (the corpus does not say: MUSDB's ``other``
may hold guitars, pianos, ...), in which case both its audio and its activity are unknown.

Pitch semantics: note events (onset_s, offset_s, MIDI pitch, velocity) per (track, canonical
instrument), from the synthesizer's exact notes or a corpus' own pitch annotations (MedleyDB's
monophonic f0, converted to notes of the nearest MIDI pitch over its voiced rows). An instrument's
pitch is known only where ``pitch.parquet`` has its row (zero notes: known silent); a track with
no row there (every real corpus without pitch annotations) has unknown pitch, never "no note".
The piano roll (:func:`notes_to_roll`, :meth:`Corpus.read_pitch`) has 88 keys, MIDI 21..108,
and the frames of the activity labels: frame ``t`` holds pitch ``p`` when a note of ``p``
overlaps the cell ``[t*hop - hop/2, t*hop + hop/2)`` (samples) around its centre (the rule of
``activity.intervals_to_frames``). Drums (:data:`UNPITCHED`) have no pitch target.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from iass.pipelines.corpus_pitch import PitchReader
from iass.pipelines.raw_wav import RAW_OPEN_FILES, RawWav

FORMAT_VERSION = 1
SAMPLE_RATE = 44100
CHANNELS = 2

TRACKS_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("source", pa.string()),          # medleydb | mixing_secrets | musdb | synth
        ("native_id", pa.string()),       # the corpus' own id
        ("artist", pa.string()),
        ("title", pa.string()),
        ("song_key", pa.string()),        # normalised artist+title (cross-corpus dedup key)
        ("split", pa.string()),           # train | valid | test
        ("shard", pa.string()),
        ("sample_rate", pa.int32()),
        ("num_samples", pa.int64()),
        ("duration_s", pa.float64()),
        ("num_frames", pa.int32()),
        ("hop", pa.int32()),
        ("mixture_path", pa.string()),    # relative to the corpus root
        ("mixture_is_sum", pa.bool_()),   # True: no usable mixture in the source; sum of stems
        ("mixture_residual_db", pa.float64()),  # energy of (mixture - sum of stems) vs mixture, dB
        ("mixture_sha256", pa.string()),
        ("fingerprint", pa.string()),     # audio fingerprint of the mixture (dedup key 2)
        ("instruments", pa.list_(pa.string())),          # canonical instruments with audio
        ("unknown_instruments", pa.list_(pa.string())),  # not annotated by the source corpus
        ("activity_method", pa.string()), # activation_conf | medleydb_lab | notes
        ("input_digest", pa.string()),    # fingerprint of the source files + params (cache key)
        ("warnings", pa.list_(pa.string())),
    ]
)

STEMS_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("instrument", pa.string()),      # canonical instrument
        ("path", pa.string()),            # relative to the corpus root
        ("sha256", pa.string()),
        ("num_samples", pa.int64()),
        ("source_stems", pa.list_(pa.string())),   # source stem ids summed into this file
        ("source_labels", pa.list_(pa.string())),  # the corpus' own labels of those stems
        ("annotated", pa.bool_()),
        ("rms_db", pa.float64()),
        # synthesized audio only (null for recordings): how each part summed into this stem was
        # rendered, as the synthesizer recorded it (pipelines/sources/render_info.py)
        ("synth_render", pa.list_(pa.struct([
            ("source_stem", pa.string()), ("instrument", pa.string()), ("soundfont", pa.string()),
            ("soundfont_sha256", pa.string()), ("bank", pa.int16()), ("program", pa.int16())]))),
    ]
)

ACTIVITY_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("instrument", pa.string()),
        ("frame", pa.int32()),
        ("active", pa.bool_()),           # null = unknown
        ("confidence", pa.float32()),     # activation confidence 0..1 (1/0 for exact labels)
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("native_id", pa.string()),
        ("path", pa.string()),
        ("stage", pa.string()),           # discover | read | validate | load | harmonize | label | split
        ("reason", pa.string()),
    ]
)


NOTES_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("instrument", pa.string()),      # canonical instrument
        ("onset_s", pa.float64()),
        ("offset_s", pa.float64()),
        ("pitch", pa.int16()),            # MIDI pitch (may lie outside the roll's 21..108)
        ("velocity", pa.int16()),         # MIDI velocity; null when the source has none (f0)
    ]
)

PITCH_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("instrument", pa.string()),      # canonical instrument whose pitch is known
        ("method", pa.string()),          # notes (exact, synthesized) | medleydb_f0
        ("num_notes", pa.int32()),
    ]
)

#: the piano roll's keys: MIDI 21 (A0) .. 108 (C8)
PITCH_MIN = 21
PITCH_MAX = 108
NUM_KEYS = PITCH_MAX - PITCH_MIN + 1
#: taxonomy subtrees without a pitch target (their notes are drum keys, not pitches)
UNPITCHED = frozenset({"drums"})


# ---------------------------------------------------------------------------------- identities
def slugify(text: str, max_len: int | None = 48, sep: str = "-", fold: bool = True,
            empty: str = "track") -> str:
    """Lower-case ASCII letters and digits; every run of anything else becomes ``sep`` (none at
    the ends). ``fold``: accented letters are transliterated (NFKD: 'é' -> 'e'), else dropped like
    any other character. Cut to ``max_len`` (None: no cut); ``empty`` when nothing is left.
    Track ids use the defaults; evaluation's metric keys ``sep="_", fold=False, max_len=None``."""
    if fold:
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", sep, text.lower()).strip(sep)
    if max_len is not None:
        text = text[:max_len].strip(sep)
    return text or empty


def make_track_id(source: str, native_id: str) -> str:
    """Stable id from (source corpus, native id): readable slug + 8 hex of a hash. Never a path."""
    digest = hashlib.sha256(f"{source}\0{native_id}".encode("utf-8")).hexdigest()[:8]
    return f"{source}-{slugify(native_id)}-{digest}"


def shard_of(track_id: str, num_shards: int) -> str:
    """Shard by a hash of the track id, so adding a track touches one shard."""
    h = int(hashlib.sha256(track_id.encode("utf-8")).hexdigest()[:8], 16)
    return f"{h % num_shards:03d}"


def num_frames(num_samples: int, hop: int) -> int:
    """Frames of a centred STFT (torch.stft center=True): n // hop + 1."""
    return int(num_samples) // int(hop) + 1


def frame_centers(n_frames: int, hop: int) -> np.ndarray:
    """Sample index at the centre of each frame."""
    return np.arange(n_frames, dtype=np.int64) * int(hop)


def interval_frames(onset_s, offset_s, hop: int, sample_rate: int = SAMPLE_RATE):
    """(first, last) frame (int64 arrays, inclusive; last < first: no frame) whose cell
    ``[t*hop - hop/2, t*hop + hop/2)`` overlaps ``[onset, offset)`` s (strictly): the frame rule of
    the activity labels, vectorised."""
    a = np.asarray(onset_s, dtype=np.float64) * sample_rate
    b = np.asarray(offset_s, dtype=np.float64) * sample_rate
    first = np.floor((a + hop / 2) / hop).astype(np.int64)
    first += (first * hop + hop / 2) <= a
    last = np.ceil((b - hop / 2) / hop).astype(np.int64)
    last -= (last * hop - hop / 2) >= b
    last = np.where(b > a, last, first - 1)
    return first, last


def notes_to_roll(onset_s, offset_s, pitch, n_frames: int, hop: int,
                  sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Piano roll (n_frames, NUM_KEYS) bool of note events: frame ``t``, key ``p - PITCH_MIN`` is
    True when a note of MIDI pitch ``p`` overlaps frame t's cell (see the module doc). Notes
    outside MIDI 21..108 are not on the roll."""
    roll = np.zeros((int(n_frames), NUM_KEYS), dtype=bool)
    first, last = interval_frames(onset_s, offset_s, hop, sample_rate)
    keys = np.asarray(pitch, dtype=np.int64) - PITCH_MIN
    first = np.maximum(first, 0)
    last = np.minimum(last, int(n_frames) - 1)
    for k, lo, hi in zip(keys.tolist(), first.tolist(), last.tolist()):
        if 0 <= k < NUM_KEYS and hi >= lo:
            roll[lo: hi + 1, k] = True
    return roll


def is_unpitched(taxonomy, name: str) -> bool:
    """Whether a taxonomy node has no pitch target (under :data:`UNPITCHED`, e.g. drums)."""
    return taxonomy.root(name) in UNPITCHED


# --------------------------------------------------------------------------------------- paths
class CorpusLayout:
    """Where each artifact lives under a corpus root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    manifest = property(lambda self: self.root / "manifest.json")
    taxonomy = property(lambda self: self.root / "taxonomy.yaml")
    tracks = property(lambda self: self.root / "tracks.parquet")
    stems = property(lambda self: self.root / "stems.parquet")
    rejects = property(lambda self: self.root / "rejects.parquet")
    activity_dir = property(lambda self: self.root / "activity")
    audio_dir = property(lambda self: self.root / "audio")
    pitch = property(lambda self: self.root / "pitch.parquet")
    notes_dir = property(lambda self: self.root / "notes")

    def activity_part(self, shard: str) -> Path:
        return self.activity_dir / f"part-{shard}.parquet"

    def notes_part(self, shard: str) -> Path:
        return self.notes_dir / f"part-{shard}.parquet"

    def track_dir(self, shard: str, track_id: str) -> Path:
        return self.audio_dir / shard / track_id

    def rel_audio(self, shard: str, track_id: str, name: str) -> str:
        """Relative path of ``mixture`` or an instrument's WAV (as stored in the tables)."""
        return f"audio/{shard}/{track_id}/{name}.wav"


# -------------------------------------------------------------------------------------- reader
class Corpus(PitchReader):
    """Read-only view of a built corpus. Tables are small and loaded once; audio and activity
    are read lazily per track (partial WAV reads), so memory does not grow with the corpus."""

    def __init__(self, root: str | Path):
        self.layout = CorpusLayout(root)
        self.root = self.layout.root
        if not self.layout.manifest.exists():
            raise FileNotFoundError(f"{self.root}: not a built corpus (no manifest.json)")
        self.manifest = json.loads(self.layout.manifest.read_text())
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{self.layout.manifest}: corpus format {self.manifest.get('format_version')} "
                f"!= supported {FORMAT_VERSION}; rebuild the corpus"
            )
        # The tables of this version: the snapshot folder manifest.json names (a rebuild writes
        # the next version's tables beside it and swaps manifest.json last, so a reader keeps a
        # complete, consistent version), or the root for corpora written without snapshots.
        snap = self.manifest.get("snapshot")
        if snap and (Path(snap).is_absolute() or ".." in Path(snap).parts):
            raise ValueError(f"{self.layout.manifest}: snapshot {snap!r} must be inside the corpus")
        self.tables = CorpusLayout(self.root / snap) if snap else self.layout
        self._activity_cache: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._notes_cache: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    # tables -----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.manifest["corpus_version"]

    @property
    def hop(self) -> int:
        return int(self.manifest["params"]["hop"])

    @cached_property
    def tracks(self):
        import polars as pl

        return pl.read_parquet(self.tables.tracks)

    @cached_property
    def stems(self):
        import polars as pl

        return pl.read_parquet(self.tables.stems)

    @cached_property
    def rejects(self):
        import polars as pl

        if not self.tables.rejects.exists():
            return pl.DataFrame(schema=pl.Schema(pl.from_arrow(REJECTS_SCHEMA.empty_table()).schema))
        return pl.read_parquet(self.tables.rejects)

    @cached_property
    def taxonomy(self):
        from iass.pipelines.taxonomy import load_taxonomy

        return load_taxonomy(self.tables.taxonomy)

    @cached_property
    def _track_rows(self) -> dict[str, dict]:
        return {r["track_id"]: r for r in self.tracks.iter_rows(named=True)}

    @cached_property
    def _stem_paths(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for r in self.stems.iter_rows(named=True):
            out.setdefault(r["track_id"], {})[r["instrument"]] = r["path"]
        return out

    def track_ids(self, split: str | None = None, source: str | None = None) -> list[str]:
        df = self.tracks
        if split is not None:
            df = df.filter(df["split"] == split)
        if source is not None:
            df = df.filter(df["source"] == source)
        return sorted(df["track_id"].to_list())

    def track(self, track_id: str) -> dict:
        return self._track_rows[track_id]

    # targets ----------------------------------------------------------------------------
    def target_known(self, track_id: str, target: str) -> bool:
        """False when the source corpus does not tell this target's audio apart (MUSDB piano;
        the residual ``other`` on a fully annotated track): :meth:`Taxonomy.target_known`."""
        return self.taxonomy.target_known(target, self.track(track_id)["unknown_instruments"])

    def target_instruments(self, track_id: str, target: str) -> list[str]:
        """Instruments of this track whose stems make up ``target``."""
        present = self._stem_paths.get(track_id, {})
        return [i for i in self.taxonomy.descendants(target) if i in present]

    # audio ------------------------------------------------------------------------------
    def _read_wav(self, rel: str, start: int, frames: int | None) -> np.ndarray:
        """(frames, channels) float32 from ``start``; frames past the end are zeros."""
        raw = self._raw_wav(rel)
        if raw is None:  # not a plain float32 WAV: libsndfile
            import soundfile as sf

            data, sr = sf.read(
                str(self.root / rel), start=start, frames=-1 if frames is None else frames,
                dtype="float32", always_2d=True, fill_value=0.0 if frames is not None else None,
            )
            return data
        n = max(raw.frames - start, 0) if frames is None else int(frames)
        out = np.empty((n, raw.channels), dtype=np.float32)
        raw.read_into(out, start)
        return out

    def _raw_wav(self, rel: str) -> "RawWav | None":
        """The corpus' own WAVs (float32 little-endian, written by ``iass.io.write_wav``) are read
        with one ``pread`` per chunk into the caller's array: no decoder, no re-open per chunk (a
        bounded number of files stay open). Other WAVs: None (libsndfile reads them)."""
        cache = self.__dict__.setdefault("_raw_cache", OrderedDict())
        if rel in cache:
            cache.move_to_end(rel)
            return cache[rel]
        raw = RawWav.open(self.root / rel)
        if len(cache) >= RAW_OPEN_FILES:
            old = cache.popitem(last=False)[1]
            if old is not None:
                old.close()
        cache[rel] = raw
        return raw

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_raw_cache", None)  # open files and buffers stay with their process
        state.pop("_scratch_buf", None)
        return state

    def read_mixture(self, track_id: str, start: int = 0, frames: int | None = None) -> np.ndarray:
        """(frames, 2) float32."""
        return self._read_wav(self.track(track_id)["mixture_path"], start, frames)

    def read_instrument(self, track_id: str, instrument: str, start: int = 0,
                        frames: int | None = None) -> np.ndarray:
        """One canonical instrument's summed stems; zeros when the track has none."""
        rel = self._stem_paths.get(track_id, {}).get(instrument)
        if rel is None:
            n = frames if frames is not None else self.track(track_id)["num_samples"] - start
            return np.zeros((max(int(n), 0), CHANNELS), dtype=np.float32)
        return self._read_wav(rel, start, frames)

    def read_target(self, track_id: str, target: str, start: int = 0,
                    frames: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Sum of the stems of ``target`` and its descendants (zeros when silent); into ``out``
        ((frames, 2) float32, overwritten) when given."""
        n = frames if frames is not None else self.track(track_id)["num_samples"] - start
        if out is None:
            out = np.zeros((max(int(n), 0), CHANNELS), dtype=np.float32)
        else:
            out[:] = 0.0
        self.add_instruments(out, track_id, self.target_instruments(track_id, target), start)
        return out

    def add_instruments(self, out: np.ndarray, track_id: str, instruments: Iterable[str],
                        start: int = 0) -> np.ndarray:
        """``out += `` each instrument's audio from ``start`` (``len(out)`` frames), in order:
        the same sums as adding :meth:`read_instrument`'s arrays, through one scratch buffer."""
        scratch = None
        for inst in instruments:
            rel = self._stem_paths.get(track_id, {}).get(inst)
            raw = self._raw_wav(rel) if rel is not None else None
            if raw is None or raw.channels != out.shape[1]:
                out += self.read_instrument(track_id, inst, start, len(out))
                continue
            if scratch is None:  # one buffer per reader, reused
                buf = self.__dict__.get("_scratch_buf")
                if buf is None or buf.size < out.size:
                    buf = self.__dict__["_scratch_buf"] = np.empty(out.size, dtype=np.float32)
                scratch = buf[: out.size].reshape(out.shape)
            raw.read_into(scratch, start)
            out += scratch
        return out

    # activity ---------------------------------------------------------------------------
    def _activity_rows(self, track_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """instrument -> (active float32 with NaN for unknown, confidence float32)."""
        if track_id in self._activity_cache:
            return self._activity_cache[track_id]
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        row = self.track(track_id)
        table = pq.read_table(
            self.tables.activity_part(row["shard"]), filters=pc.field("track_id") == track_id
        )
        n = int(row["num_frames"])
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        inst_col = table.column("instrument").to_pylist()
        frames = table.column("frame").to_numpy()
        active = table.column("active").to_pylist()
        conf = table.column("confidence").to_numpy(zero_copy_only=False)
        by_inst: dict[str, list[int]] = {}
        for idx, inst in enumerate(inst_col):
            by_inst.setdefault(inst, []).append(idx)
        for inst, idxs in by_inst.items():
            a = np.full(n, np.nan, dtype=np.float32)
            c = np.full(n, np.nan, dtype=np.float32)
            sel = np.asarray(idxs)
            vals = np.array([np.nan if active[i] is None else float(active[i]) for i in idxs],
                            dtype=np.float32)
            a[frames[sel]] = vals
            c[frames[sel]] = conf[sel]
            out[inst] = (a, c)
        if len(self._activity_cache) > 256:  # bounded: readers stream over many tracks
            self._activity_cache.clear()
        self._activity_cache[track_id] = out
        return out

    def read_activity(self, track_id: str, names: Sequence[str]) -> np.ndarray:
        """(len(names), num_frames) float32: 1 active, 0 inactive, NaN unknown.

        A name may be any taxonomy node: a group is active where any instrument under it is,
        and unknown where the corpus does not annotate it (see :meth:`target_known`)."""
        row = self.track(track_id)
        n = int(row["num_frames"])
        rows = self._activity_rows(track_id)
        out = np.zeros((len(names), n), dtype=np.float32)
        for k, name in enumerate(names):
            if not self.target_known(track_id, name):
                out[k] = np.nan
                continue
            for inst in self.taxonomy.descendants(name):
                if inst in rows:
                    a = rows[inst][0]
                    # OR with NaN propagation only where nothing is known to be active
                    out[k] = np.where(np.isnan(a), np.where(out[k] == 1, 1, np.nan),
                                      np.maximum(np.nan_to_num(out[k], nan=0.0), a))
        return out

    @cached_property
    def playing(self) -> dict[str, frozenset[str]]:
        """track_id -> the instruments with at least one active frame: one scan of the activity
        shards of this version (no per-track reads)."""
        import polars as pl

        parts = sorted(str(p) for p in self.tables.activity_dir.glob("part-*.parquet"))
        if not parts:
            return {}
        rows = (pl.scan_parquet(parts).filter(pl.col("active")).select("track_id", "instrument")
                .unique().collect())
        out: dict[str, set[str]] = {}
        for tid, inst in rows.iter_rows():
            out.setdefault(tid, set()).add(inst)
        return {tid: frozenset(v) for tid, v in out.items()}

    def target_plays(self, track_id: str, target: str) -> bool:
        """Whether any instrument under ``target`` is active somewhere in the track."""
        playing = self.playing.get(track_id, frozenset())
        return any(i in playing for i in self.taxonomy.descendants(target))

    def activity_frame(self, track_id: str):
        """The track's activity rows as a polars DataFrame."""
        import polars as pl

        row = self.track(track_id)
        return (pl.scan_parquet(self.tables.activity_part(row["shard"]))
                .filter(pl.col("track_id") == track_id).collect())


def iter_activity_parts(root: str | Path) -> Iterable[Path]:
    return sorted(CorpusLayout(root).activity_dir.glob("part-*.parquet"))
