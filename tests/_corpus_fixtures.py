"""Small source corpora in the real on-disk layouts, generated with numpy + soundfile.

MedleyDB and Mixing Secrets (``<Id>/<Id>_METADATA.yaml``, ``_MIX``, ``_STEMS``), MUSDB18-HQ
(``{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav``) and the synthesizer's
native layout (``track.json``, ``stems/<instrument>.wav``, ``notes.parquet``). Stems are tone
bursts with silent gaps at known times, so activity has a known answer.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

SR = 44100


def burst(duration: float, on: list[tuple[float, float]], freq: float, amp: float = 0.3,
          seed: int = 0) -> np.ndarray:
    """Stereo tone (plus a little noise) sounding only inside the ``on`` intervals (s)."""
    n = int(round(duration * SR))
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    x = amp * np.sin(2 * np.pi * freq * t) + 0.02 * amp * rng.standard_normal(n)
    gate = np.zeros(n)
    for a, b in on:
        gate[int(a * SR): int(b * SR)] = 1.0
    y = (x * gate).astype(np.float32)
    return np.stack([y, 0.8 * y], axis=1)


def write_wav(path: Path, audio: np.ndarray, subtype: str = "FLOAT") -> None:
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
    import pyarrow as pa
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
