"""Test corpora with known answers, in one module: source trees and small built corpora.

* **Source trees** in the real on-disk release layouts, input to the build pipeline (numpy +
  soundfile + yaml): MedleyDB and Mixing Secrets (``<Id>/<Id>_METADATA.yaml``, ``_MIX``,
  ``_STEMS``), MUSDB18-HQ (``{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav``)
  and the synthesizer's native layout (``track.json``, ``stems/<instrument>.wav``,
  ``notes.parquet``): :func:`make_sources`, :func:`medleydb_track`, :func:`musdb_track`,
  :func:`synth_track`. Stems are tone :func:`burst` s with silent gaps at known times.
* **Built corpora** in the REAL corpus format (``pipelines/corpus_format.py``) via one writer,
  :func:`write_corpus`: tables with the format's schemas, float stereo WAVs at 44.1 kHz, a
  manifest with the keys the reader relies on, exact labels (frame ``t`` is active iff its centre
  sample ``t * hop`` lies in a region: :func:`frame_labels`). Two flavours:

  - :func:`write_fixture_corpus` (training and loader tests): harmonic :func:`tone` s, a different
    pitch per instrument, tracks :func:`default_fixture_tracks`;
  - :func:`write_eval_corpus` (evaluation tests): notes in each instrument's OWN frequency band
    (:func:`render_stem`) over a low broadband noise floor, tracks :func:`default_eval_tracks`,
    and :class:`BandSeparator`, a fixed per-band mask that separates them (good, not perfect: it
    keeps the other stems' noise in its band and the mask carries a deterministic error; the
    ideal binary mask is better and the mixture itself is worse: the order the references must
    show). Activity is visible as band energy.

  Each has one MUSDB-like track that leaves the guitars and the piano unknown (inside its
  ``other`` stem).

Every signal is cut to its regions by the one :func:`gate`. The real layouts of each source corpus
(with their metadata quirks) are in ``source_fixtures.py``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf
import yaml

from iass import REGISTRY_DIR
from iass.io import atomic_write_json, atomic_write_parquet, file_digest, stable_hash
from iass.io import write_wav as io_write_wav
from iass.pipelines import corpus_format as cf

SR = cf.SAMPLE_RATE   # 44100
HOP = 1024            # the evaluation corpus' hop
N_FFT = 4096          # the BandSeparator's STFT size

#: instrument -> fundamental (Hz) of its :func:`tone`; each target gets its own register
PITCH = {
    "lead_vocals": 440.0, "drums": 150.0, "electric_bass": 55.0, "electric_guitar": 330.0,
    "acoustic_guitar": 262.0, "piano": 523.0, "organ": 784.0, "other": 1046.0,
    "backing_vocals": 587.0,
}
#: instrument -> its frequency band (Hz) in :func:`render_stem`; disjoint, so a band mask separates
BAND = {
    "electric_bass": (60.0, 200.0), "piano": (250.0, 550.0), "lead_vocals": (600.0, 1150.0),
    "backing_vocals": (1250.0, 1800.0), "electric_guitar": (2000.0, 2900.0),
    "acoustic_guitar": (3100.0, 4400.0), "organ": (4600.0, 5700.0), "drums": (6000.0, 9500.0),
    "other": (10500.0, 14000.0),
}
#: instrument -> the target it feeds (None: part of the rest)
TARGET_OF = {
    "electric_bass": "bass", "piano": "piano", "lead_vocals": "vocals", "backing_vocals": "vocals",
    "electric_guitar": "electric_guitar", "acoustic_guitar": "acoustic_guitar", "drums": "drums",
    "organ": None, "other": None,
}
TARGETS = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]


# ------------------------------------------------------------------------- regions and labels
def gate(regions: list[tuple[float, float]], n: int, round_edges: bool = True) -> np.ndarray:
    """(n,) float32: 1 inside the active regions (seconds), else 0. Region edges are rounded to
    the nearest sample, or truncated with ``round_edges=False`` (the source trees' bursts)."""
    g = np.zeros(n, dtype=np.float32)
    for a, b in regions:
        if round_edges:
            g[int(round(a * SR)):int(round(b * SR))] = 1.0
        else:
            g[int(a * SR):int(b * SR)] = 1.0
    return g


def frame_labels(regions: list[tuple[float, float]], n_samples: int, hop: int) -> np.ndarray:
    """The exact labels: frame t is active iff sample t * hop is inside a region."""
    g = gate(regions, n_samples)
    centres = cf.frame_centers(cf.num_frames(n_samples, hop), hop)
    return np.array([g[c] if c < n_samples else 0.0 for c in centres], dtype=np.float32)


# ------------------------------------------------------------------------------------ signals
def burst(duration: float, on: list[tuple[float, float]], freq: float, amp: float = 0.3,
          seed: int = 0) -> np.ndarray:
    """Stereo tone (plus a little noise) sounding only inside the ``on`` intervals (s)."""
    n = int(round(duration * SR))
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    x = amp * np.sin(2 * np.pi * freq * t) + 0.02 * amp * rng.standard_normal(n)
    y = (x * gate(on, n, round_edges=False)).astype(np.float32)
    return np.stack([y, 0.8 * y], axis=1)


def tone(instrument: str, n: int, seed: int) -> np.ndarray:
    """(n, 2) a steady harmonic tone; the right channel is quieter (so a channel swap shows)."""
    t = np.arange(n) / SR
    f0 = PITCH[instrument]
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    mono = sum(a * np.sin(2 * np.pi * f0 * h * t + p) for a, h, p in zip((0.3, 0.15, 0.08), (1, 2, 3), phase))
    return np.stack([mono, 0.6 * mono], 1).astype(np.float32)


def render_stem(instrument: str, regions, n: int, seed: int) -> np.ndarray:
    """(n, 2) float32: notes in the instrument's band inside the regions, plus a noise floor."""
    rng = np.random.default_rng(seed)
    lo, hi = BAND[instrument]
    t = np.arange(n) / SR
    out = np.zeros((n, 2))
    if instrument in ("drums", "other"):
        # band-limited noise bursts: filtered in the FFT domain, hits every 0.25 s
        spec = np.fft.rfft(rng.standard_normal((2, n)), axis=1)
        f = np.fft.rfftfreq(n, 1 / SR)
        spec[:, (f < lo) | (f > hi)] = 0
        noise = np.fft.irfft(spec, n, axis=1).T
        noise /= np.abs(noise).max() + 1e-9
        env = np.exp(-((t % 0.25) / 0.06))
        out = 0.35 * noise * env[:, None]
    else:
        note_len = 0.3
        for k in range(int(np.ceil(n / SR / note_len))):
            a, b = int(k * note_len * SR), min(int((k + 1) * note_len * SR), n)
            f0 = rng.uniform(lo, hi - (hi - lo) * 0.1)
            tt = t[a:b] - t[a]
            env = np.minimum(tt / 0.01, 1.0) * np.exp(-tt / 0.4)
            phase = rng.uniform(0, 2 * np.pi)
            note = 0.25 * env * np.sin(2 * np.pi * f0 * tt + phase)
            out[a:b, 0] += note
            out[a:b, 1] += 0.7 * note          # panned left: the channels differ
    out += 0.004 * rng.standard_normal((n, 2))  # broadband floor: leaks into every band
    return (out * gate(regions, n)[:, None]).astype(np.float32)


# ------------------------------------------------------------- source trees (release layouts)
def write_wav(path: Path, audio: np.ndarray, subtype: str = "FLOAT") -> None:
    """A source-tree WAV at 44.1 kHz, written by libsndfile as a release's files are (the built
    corpora use ``iass.io.write_wav``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SR, subtype=subtype)


def medleydb_track(root: Path, native_id: str, stems: dict[str, tuple[str, np.ndarray]],
                   artist: str = "", title: str = "", origin: str = "MedleyDB",
                   mix: bool = True, stem_names: dict[str, str] | None = None) -> Path:
    """A MedleyDB-format track; ``stems`` = {'S01': (label, audio)}."""
    tdir = root / native_id
    stem_dir = tdir / f"{native_id}_STEMS"
    meta_stems = {}
    total = None
    for sid, (label, audio) in stems.items():
        fname = (stem_names or {}).get(sid) or f"{native_id}_STEM_{sid[1:]}.wav"
        write_wav(stem_dir / fname, audio)
        meta_stems[sid] = {"component": "", "filename": fname, "instrument": label, "raw": {}}
        total = audio.copy() if total is None else total + audio
    if mix:
        write_wav(tdir / f"{native_id}_MIX.wav", total)
    meta = {"album": "", "artist": artist, "composer": "", "excerpt": "no", "genre": "",
            "has_bleed": "no", "instrumental": "no", "mix_filename": f"{native_id}_MIX.wav",
            "origin": origin, "producer": "", "raw_dir": f"{native_id}_RAW",
            "stem_dir": f"{native_id}_STEMS", "stems": meta_stems, "version": "1.2"}
    if title:
        meta["title"] = title
    (tdir / f"{native_id}_METADATA.yaml").write_text(yaml.safe_dump(meta, sort_keys=True))
    return tdir


def musdb_track(root: Path, split_folder: str, name: str, stems: dict[str, np.ndarray]) -> Path:
    """A MUSDB18-HQ track folder; ``stems`` has keys vocals, drums, bass, other."""
    tdir = root / split_folder / name
    total = None
    for key in ("vocals", "drums", "bass", "other"):
        write_wav(tdir / f"{key}.wav", stems[key])
        total = stems[key].copy() if total is None else total + stems[key]
    write_wav(tdir / "mixture.wav", total)
    return tdir


def synth_track(root: Path, native_id: str, notes: dict[str, list[tuple[float, float]]],
                duration: float, artist: str = "Synth", title: str = "") -> Path:
    """A synthesizer-native track: one stem per canonical instrument and exact notes."""
    import pyarrow.parquet as pq

    tdir = root / native_id
    total = None
    rows = {"instrument": [], "program": [], "is_drum": [], "pitch": [], "velocity": [],
            "onset_s": [], "offset_s": []}
    for k, (inst, ivs) in enumerate(notes.items()):
        audio = burst(duration, ivs, 220.0 * (k + 1), seed=k)
        write_wav(tdir / "stems" / f"{inst}.wav", audio)
        total = audio.copy() if total is None else total + audio
        for a, b in ivs:
            for col, v in zip(rows, (inst, 0, False, 60, 100, a, b)):
                rows[col].append(v)
    write_wav(tdir / "mixture.wav", total)
    pq.write_table(pa.table(rows), str(tdir / "notes.parquet"))
    (tdir / "track.json").write_text(json.dumps({
        "artist": artist, "title": title or native_id, "duration_s": duration,
        "instruments": list(notes)}))
    return tdir


def make_sources(base: Path, duration: float = 3.0) -> dict[str, Path]:
    """One small corpus per layout; MUSDB's 'Music Delta - 80s Rock' is MedleyDB's MusicDelta_80sRock."""
    d = duration
    vocals = burst(d, [(0.5, 2.0)], 440.0, seed=1)
    drums = burst(d, [(0.0, d)], 110.0, seed=2)
    bass = burst(d, [(1.0, 2.5)], 55.0, seed=3)
    guitar = burst(d, [(0.2, 1.2), (2.0, 2.8)], 330.0, seed=4)
    quiet = burst(d, [(0.0, d)], 660.0, amp=0.003, seed=5)

    mdb = base / "medleydb"
    medleydb_track(mdb, "MusicDelta_80sRock", {
        "S01": ("drum set", drums), "S02": ("electric bass", bass),
        "S03": ("distorted electric guitar", guitar), "S04": ("male singer", vocals)},
        artist="Music Delta Multitracks", title="80s Rock")
    medleydb_track(mdb, "AlphaBand_FirstSong", {
        "S01": ("drum set", burst(d, [(0.0, 1.5)], 120.0, seed=6)),
        "S02": ("piano", burst(d, [(1.0, d)], 262.0, seed=7)),
        "S03": ("clean electric guitar", quiet),
        "S04": ("distorted electric guitar", burst(d, [(2.0, d)], 370.0, seed=14))},
        artist="Alpha Band", title="First Song")

    ms = base / "mixing_secrets"
    medleydb_track(ms, "Actions_OneMinuteSmile", {
        "S01": ("drum set", drums), "S02": ("female singer", vocals),
        "S03": ("acoustic guitar", guitar)},
        artist="Actions", origin="Mixing Secrets",
        stem_names={"S01": "Actions_OneMinuteSmile_STEM_drums.wav", "S02": "02_Vox.wav",
                    "S03": "03_AcGtr.wav"})
    medleydb_track(ms, "BetaGroup_SecondSong", {
        "S01": ("drum set", burst(d, [(0.5, d)], 100.0, seed=8)),
        "S02": ("electric bass", burst(d, [(0.0, 2.0)], 60.0, seed=9))},
        artist="BetaGroup", origin="Mixing Secrets")

    mus = base / "musdb"
    musdb_track(mus, "train", "Music Delta - 80s Rock",
                {"vocals": vocals, "drums": drums, "bass": bass, "other": guitar})
    musdb_track(mus, "train", "Actions - One Minute Smile",
                {"vocals": vocals, "drums": drums, "bass": bass * 0, "other": guitar})
    musdb_track(mus, "test", "Gamma Trio - Third Song",
                {"vocals": burst(d, [(0.0, 1.0)], 500.0, seed=10),
                 "drums": burst(d, [(0.0, d)], 90.0, seed=11),
                 "bass": burst(d, [(1.5, d)], 70.0, seed=12),
                 "other": burst(d, [(0.5, 2.5)], 880.0, seed=13)})

    syn = base / "synth"
    synth_track(syn, "song-000", {"piano": [(0.1, 0.6), (1.0, 1.01), (2.0, 2.9)],
                                  "electric_bass": [(0.0, 3.0)],
                                  "lead_vocals": [(1.5, 2.5)]}, d)
    synth_track(syn, "song-001", {"drums": [(0.0, 2.0)], "acoustic_guitar": [(0.5, 1.5)]}, d)
    return {"medleydb": mdb, "mixing_secrets": ms, "musdb": mus, "synth": syn}


# ------------------------------------------------------------- built corpora (corpus format)
@dataclass
class FixtureTrack:
    native_id: str
    split: str
    seconds: float
    stems: dict[str, list[tuple[float, float]]]   # instrument -> active regions (s)
    source: str = "synth"
    unknown: list[str] = field(default_factory=list)
    #: instrument -> notes (onset s, offset s, MIDI pitch); None: the track has no pitch labels
    notes: dict[str, list[tuple[float, float, int]]] | None = None

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * SR))


EvalTrack = FixtureTrack  # the evaluation corpus' tracks: the same fields


def write_corpus(root: str | Path, tracks: list, render, hop: int, num_shards: int,
                 built_by: str, artist: str = "fixture") -> dict:
    """Fixture tracks (``native_id, split, stems {instrument: regions}, source, unknown,
    num_samples``) written in the real corpus format: stems rendered by ``render(n_track, k,
    instrument, regions, n) -> (n, 2) float32`` (None: no stem), mixture = their sum, exact
    labels from the regions (``other`` = unknown), the tables with the format's schemas and a
    manifest. Returns {track_id: track}."""
    root = Path(root)
    layout = cf.CorpusLayout(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REGISTRY_DIR / "taxonomy.yaml", layout.taxonomy)
    from iass.pipelines.taxonomy import load_taxonomy

    tax = load_taxonomy(layout.taxonomy)
    track_rows, stem_rows, act_rows, truth = [], [], {}, {}
    pitch_rows, note_rows = [], {}
    for n_track, tr in enumerate(tracks):
        tid = cf.make_track_id(tr.source, tr.native_id)
        shard = cf.shard_of(tid, num_shards)
        n, nf = tr.num_samples, cf.num_frames(tr.num_samples, hop)
        mixture = np.zeros((n, 2), dtype=np.float32)
        present = []
        for k, (inst, regions) in enumerate(tr.stems.items()):
            audio = render(n_track, k, inst, regions, n)
            if audio is None:
                continue
            rel = layout.rel_audio(shard, tid, inst)
            io_write_wav(root / rel, audio, SR)
            mixture += audio
            present.append(inst)
            stem_rows.append({
                "track_id": tid, "instrument": inst, "path": rel, "sha256": file_digest(root / rel),
                "num_samples": n, "source_stems": [f"{inst}.wav"], "source_labels": [inst],
                "annotated": inst != "other",
                "rms_db": float(10 * np.log10(np.mean(audio.astype(np.float64) ** 2) + 1e-12)),
            })
            labels = frame_labels(regions, n, hop)
            active = [None] * nf if inst == "other" else [bool(v) for v in labels]  # MUSDB-like: unknown
            for f in range(nf):
                act_rows.setdefault(shard, []).append({
                    "track_id": tid, "instrument": inst, "frame": f, "active": active[f],
                    "confidence": float(labels[f]),
                })
        if tr.notes is not None:  # pitch known for every pitched instrument with a stem
            for inst in present:
                if cf.is_unpitched(tax, inst):
                    continue
                notes = tr.notes.get(inst, [])
                pitch_rows.append({"track_id": tid, "instrument": inst, "method": "notes",
                                   "num_notes": len(notes)})
                note_rows.setdefault(shard, []).extend(
                    {"track_id": tid, "instrument": inst, "onset_s": a, "offset_s": b,
                     "pitch": p, "velocity": 100} for a, b, p in notes)
        mix_rel = layout.rel_audio(shard, tid, "mixture")
        io_write_wav(root / mix_rel, mixture, SR)
        track_rows.append({
            "track_id": tid, "source": tr.source, "native_id": tr.native_id, "artist": artist,
            "title": tr.native_id, "song_key": f"{artist} {tr.native_id}", "split": tr.split,
            "shard": shard, "sample_rate": SR, "num_samples": n, "duration_s": n / SR,
            "num_frames": nf, "hop": hop, "mixture_path": mix_rel, "mixture_is_sum": True,
            "mixture_residual_db": -120.0, "mixture_sha256": file_digest(root / mix_rel),
            "fingerprint": stable_hash(tr.native_id, 16), "instruments": present,
            "unknown_instruments": [tax.check(u) for u in tr.unknown],
            "activity_method": "notes", "input_digest": stable_hash([tr.native_id, hop], 16),
            "warnings": [],
        })
        truth[tid] = tr
    atomic_write_parquet(layout.tracks, pa.Table.from_pylist(track_rows, schema=cf.TRACKS_SCHEMA))
    atomic_write_parquet(layout.stems, pa.Table.from_pylist(stem_rows, schema=cf.STEMS_SCHEMA))
    for shard, rows in act_rows.items():
        atomic_write_parquet(layout.activity_part(shard), pa.Table.from_pylist(rows, schema=cf.ACTIVITY_SCHEMA))
    atomic_write_parquet(layout.rejects, cf.REJECTS_SCHEMA.empty_table())
    if pitch_rows:
        atomic_write_parquet(layout.pitch, pa.Table.from_pylist(pitch_rows, schema=cf.PITCH_SCHEMA))
        for shard in {cf.shard_of(r["track_id"], num_shards) for r in pitch_rows}:
            atomic_write_parquet(layout.notes_part(shard), pa.Table.from_pylist(
                note_rows.get(shard, []), schema=cf.NOTES_SCHEMA))
    version = stable_hash([r["mixture_sha256"] for r in track_rows] + [r["sha256"] for r in stem_rows], 16)
    atomic_write_json(layout.manifest, {
        "format_version": cf.FORMAT_VERSION, "corpus_version": version,
        "taxonomy_sha256": tax.sha256, "params": {"hop": hop, "sample_rate": SR},
        "counts": {"tracks": len(track_rows), "stems": len(stem_rows)}, "built_by": built_by,
    })
    return truth


def default_fixture_tracks(seconds: float = 3.0) -> list[FixtureTrack]:
    """The training corpus: 7 train tracks (one MUSDB-like), 2 valid, 1 test."""
    s = seconds
    full = [(0.0, s)]
    tracks = []
    for i in range(6):
        # alternate on/off patterns per instrument and track
        a, b = 0.2 + 0.1 * i, s - 0.3 - 0.05 * i
        tracks.append(FixtureTrack(
            f"song{i:02d}", "train", s,
            {
                "lead_vocals": [(a, s / 2), (s / 2 + 0.4, b)],
                "drums": full if i % 2 == 0 else [(0.0, s / 3)],
                "electric_bass": [(0.1 * i, s - 0.1)],
                "electric_guitar": [(s / 3, s)] if i % 3 else [],
                "piano": [(0.0, s / 2)] if i % 2 else [(s / 2, s)],
                "acoustic_guitar": [(a, b)] if i in (1, 4) else [],
                "organ": [(0.0, s)] if i % 2 else [],
            },
        ))
    tracks.append(FixtureTrack(
        "musdb-like", "train", s,
        {"lead_vocals": [(0.5, s)], "drums": full, "electric_bass": full, "other": full},
        source="musdb", unknown=["electric_guitar", "acoustic_guitar", "piano"],
    ))
    for i in range(2):
        tracks.append(FixtureTrack(
            f"valid{i}", "valid", s,
            {"lead_vocals": [(0.3, s - 0.5)], "drums": full, "electric_bass": [(0.0, s / 2)],
             "electric_guitar": [(s / 4, s)], "piano": [(0.0, s / 3)] if i else [],
             "acoustic_guitar": [(0.2, 1.0)] if i else [], "organ": [(1.0, 2.0)]},
        ))
    tracks.append(FixtureTrack(
        "test0", "test", s,
        {"lead_vocals": [(0.2, 2.0)], "drums": full, "electric_bass": full, "piano": [(1.0, s)]},
    ))
    return tracks


def midi_of(instrument: str) -> int:
    """The MIDI pitch nearest the fundamental of an instrument's :func:`tone`."""
    return int(round(69 + 12 * np.log2(PITCH[instrument] / 440.0)))


def with_notes(tracks: list[FixtureTrack]) -> list[FixtureTrack]:
    """The tracks with pitch labels: each non-MUSDB track's instruments play their :func:`tone`'s
    pitch (:func:`midi_of`) over their regions; MUSDB-like tracks stay without (unknown)."""
    from dataclasses import replace

    return [tr if tr.source == "musdb" else replace(tr, notes={
        inst: [(a, b, midi_of(inst)) for a, b in regions] for inst, regions in tr.stems.items()})
        for tr in tracks]


def write_fixture_corpus(root: str | Path, tracks: list[FixtureTrack] | None = None, hop: int = 256,
                         num_shards: int = 4, pitch: bool = False) -> dict:
    """Write the training corpus (:func:`tone` stems); return {track_id: FixtureTrack} (the truth).
    ``pitch``: the tracks carry notes (:func:`with_notes`), so the corpus has pitch labels."""
    tracks = tracks if tracks is not None else default_fixture_tracks()
    if pitch:
        tracks = with_notes(tracks)

    def render(n_track: int, k: int, inst: str, regions, n: int):
        if not regions:
            return None                                   # absent instruments have no stem
        return tone(inst, n, seed=1000 * n_track + k) * gate(regions, n)[:, None]

    return write_corpus(root, tracks, render, hop, num_shards,
                        built_by="tests/corpus_fixtures.py (write_fixture_corpus)")


def default_eval_tracks(seconds: float = 3.0) -> list[EvalTrack]:
    """The evaluation corpus: 4 test tracks (one MUSDB-like), 1 train, 1 valid."""
    s = seconds
    full = [(0.0, s)]
    tracks = [
        EvalTrack("test-a", "test", s, {
            "lead_vocals": [(0.4, 2.2), (2.6, s)], "backing_vocals": [(1.0, 2.0)], "drums": full,
            "electric_bass": full, "piano": [(0.0, 2.5)], "electric_guitar": [(1.5, s)],
            "organ": [(0.0, s)],
        }),
        EvalTrack("test-b", "test", s, {
            "lead_vocals": [(0.0, 3.0)], "drums": [(0.0, 2.0), (2.5, s)], "electric_bass": [(0.5, s)],
            "acoustic_guitar": [(0.0, s)], "piano": [(2.0, s)],
        }),
        EvalTrack("test-c", "test", s, {
            "lead_vocals": [(1.0, s)], "drums": full, "electric_bass": full,
            "electric_guitar": [(0.0, 2.0)], "acoustic_guitar": [(2.0, s)], "organ": [(1.0, 3.0)],
        }),
        EvalTrack("musdb-like", "test", s, {
            "lead_vocals": [(0.5, s)], "drums": full, "electric_bass": full, "other": full,
        }, source="musdb", unknown=["electric_guitar", "acoustic_guitar", "piano"]),
        EvalTrack("train-a", "train", s, {
            "lead_vocals": [(0.2, 3.0)], "drums": full, "electric_bass": full,
            "electric_guitar": [(1.0, s)], "acoustic_guitar": [(0.0, 1.5)], "piano": [(0.5, s)],
        }),
        EvalTrack("valid-a", "valid", s, {
            "lead_vocals": [(0.0, 2.0)], "drums": full, "electric_bass": [(1.0, s)],
            "electric_guitar": [(0.0, s)], "piano": [(1.0, 3.0)], "acoustic_guitar": [(2.0, s)],
        }),
    ]
    return tracks


def write_eval_corpus(root: str | Path, tracks: list[EvalTrack] | None = None, hop: int = HOP,
                      num_shards: int = 4) -> dict[str, EvalTrack]:
    """Write the evaluation corpus (:func:`render_stem` stems) under ``root``; return
    {track_id: EvalTrack} (the ground truth)."""
    return write_corpus(root, tracks if tracks is not None else default_eval_tracks(),
                        lambda n_track, k, inst, regions, n: render_stem(inst, regions, n, seed=100 * n_track + k),
                        hop, num_shards, built_by="tests/corpus_fixtures.py (write_eval_corpus)",
                        artist="eval fixture")


# ------------------------------------------------------------------------ test separators
class BandSeparator:
    """A separator of the inference protocol for the evaluation corpus: each target's mask is its
    bands (with a deterministic, content-dependent error of +-``error``), its activity logit the
    band energy smoothed over +-2 frames (a receptive field in time, so chunk context matters).
    Picklable, so evaluation worker processes can use it."""

    context_frames = 2

    def __init__(self, targets=TARGETS, sample_rate: int = SR, n_fft: int = N_FFT, hop: int = HOP,
                 error: float = 0.3, has_activity: bool = True, name: str = "band"):
        self.targets = list(targets)
        self.sample_rate, self.n_fft, self.hop = sample_rate, n_fft, hop
        self.error, self.has_activity, self.name = error, has_activity, name
        freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
        self.band = np.zeros((len(self.targets), len(freqs)), dtype=np.float32)
        for k, target in enumerate(self.targets):
            for inst, tgt in TARGET_OF.items():
                if tgt == target:
                    lo, hi = BAND[inst]
                    self.band[k, (freqs >= lo - 20) & (freqs <= hi + 20)] = 1.0

    def masks(self, mixture_mag):
        import torch
        import torch.nn.functional as F

        band = torch.from_numpy(self.band)                                # (K, F)
        wobble = 1.0 + self.error * torch.sin(3e3 * mixture_mag)          # (C, F, T), in [1-e, 1+e]
        mask = band[:, None, :, None] * wobble[None]
        energy = torch.einsum("kf,cft->kt", band, mixture_mag ** 2) / band.sum(1, keepdim=True).clamp_min(1)
        energy = F.avg_pool1d(energy[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0]
        logits = 1.5 * (torch.log10(energy + 1e-12) - 1.0)
        return mask.clamp_min(0), (logits if self.has_activity else None)


#: the hop of the training fixture corpus (write_fixture_corpus(root, hop=TRAIN_HOP))
TRAIN_HOP = 256


def tiny_train_overrides(steps_per_epoch: int = 3) -> list[str]:
    """``-S`` overrides of a tiny, fast training on the training fixture corpus (tiny IASS
    preset, Open-Unmix hidden 16, 0.5 s chunks, batch 4, one thread)."""
    return [
        "model.iass.preset=tiny", f"stft.hop={TRAIN_HOP}", "stft.n_fft=512", "train.chunk_seconds=0.5",
        "train.batch_size=4", f"train.steps_per_epoch={steps_per_epoch}", "train.workers=0",
        "train.stats_examples=4", "train.valid_chunks_per_track=1", "model.umx.hidden_size=16",
        "train.lr=0.003", "train.threads=1",
    ]
