"""Small source-corpus trees written in each corpus's REAL on-disk layout (numpy + soundfile).

Each builder writes a tree under ``root`` and returns :class:`Expected`: what an adapter must
find there (ids, stem labels, canonical instruments, splits, the audio written), so the contract
test in test_sources.py checks adapters against what was written, not against themselves.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from conftest import make_audio, write_wav

SR = 44100


@dataclass
class ExpectedStem:
    labels: tuple[str, ...]
    instrument: str
    annotated: bool = True
    audio: np.ndarray | None = None        # samples written (frames, channels)
    lossy: bool = False                    # AAC: compare loosely


@dataclass
class ExpectedTrack:
    native_id: str
    stems: dict[str, ExpectedStem]
    artist: str = ""
    title: str = ""
    split: str | None = None
    mixture: np.ndarray | None = None      # None: the adapter must report no mixture
    has_mixture: bool = True
    activation_conf: bool = False


@dataclass
class Expected:
    source: str
    root: Path
    options: dict = field(default_factory=dict)
    tracks: dict[str, ExpectedTrack] = field(default_factory=dict)


# ------------------------------------------------------------------ MedleyDB format


def medleydb_metadata(native_id: str, stems: dict[str, dict], origin: str = "Medley", artist="Art",
                      title="Song", mix_filename: str | None = None) -> dict:
    """A metadata mapping with MedleyDB's 16 keys ('yes'/'no' strings, list-valued instruments)."""
    return {
        "album": "", "artist": artist, "composer": [], "excerpt": "no", "genre": "Rock",
        "has_bleed": "no", "instrumental": "no",
        "mix_filename": mix_filename or f"{native_id}_MIX.wav", "origin": origin, "producer": [],
        "raw_dir": f"{native_id}_RAW", "stem_dir": f"{native_id}_STEMS",
        "stems": {
            sid: {"component": "", "filename": spec["filename"], "instrument": spec["instrument"],
                  "raw": {"R01": {"filename": f"raw_{sid}.wav", "instrument": spec["instrument"]}}}
            for sid, spec in stems.items()
        },
        "title": title, "version": 1.2, "website": [],
    }


def write_medleydb_track(root: Path, native_id: str, meta: dict, *, seconds=0.2, sample_rate=SR,
                         seed=0, metadata_dir: Path | None = None, write_mix=True,
                         mono: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Write ``<root>/<Id>/{<Id>_METADATA.yaml, <Id>_MIX.wav, <Id>_STEMS/...}``; return the audio."""
    track_dir = root / native_id
    stem_dir = track_dir / meta.get("stem_dir", f"{native_id}_STEMS")
    stem_dir.mkdir(parents=True, exist_ok=True)
    audio = {}
    for i, (sid, spec) in enumerate(sorted(meta["stems"].items())):
        channels = 1 if sid in mono else 2
        audio[sid] = write_wav(stem_dir / spec["filename"], seconds, sample_rate, channels, seed + i)
    mix = None
    if write_mix:
        stacked = [a if a.shape[1] == 2 else np.repeat(a, 2, axis=1) for a in audio.values()]
        mix = np.clip(np.sum(stacked, axis=0) / max(1, len(stacked)), -1, 1).astype(np.float32)
        mix_name = meta.get("mix_filename") or f"{native_id}_MIX.wav"
        fmt = "MP3" if mix_name.lower().endswith(".mp3") else None
        write_wav(track_dir / mix_name, sample_rate=sample_rate, data=mix,
                  subtype="MPEG_LAYER_III" if fmt else "PCM_16", format=fmt)
    meta_dir = metadata_dir or track_dir
    meta_dir.mkdir(parents=True, exist_ok=True)
    (meta_dir / f"{native_id}_METADATA.yaml").write_text(yaml.safe_dump(meta, sort_keys=True))
    return audio, mix


def build_medleydb(root: Path, *, metadata_apart: bool = False) -> Expected:
    """Two MedleyDB tracks: list-valued labels, non-contiguous stem ids, an activation-conf lab."""
    audio_root = root / "Audio"
    meta_dir = root / "Metadata" if metadata_apart else None
    exp = Expected("medleydb", audio_root, {"metadata_dir": str(meta_dir)} if meta_dir else {})
    t1 = "MusicDelta_Rock"
    meta1 = medleydb_metadata(t1, {
        "S01": {"filename": f"{t1}_STEM_01.wav", "instrument": "drum set"},
        "S02": {"filename": f"{t1}_STEM_02.wav", "instrument": ["male singer", "vocalists"]},
        "S04": {"filename": f"{t1}_STEM_04.wav", "instrument": "clean electric guitar"},
        "S10": {"filename": f"{t1}_STEM_10.wav", "instrument": "Main System"},
    }, origin="Music Delta", artist="Music Delta", title="Rock")
    meta1["stems"]["S03"] = {"component": "", "filename": f"{t1}_STEM_03.wav", "instrument": "Unlabeled"}
    a1, m1 = write_medleydb_track(audio_root, t1, meta1, metadata_dir=meta_dir)
    lab = "time,S01,S02,S03,S04,S10\n0.0000,0.9,0.1,0.2,0.2,0.5\n0.0464,0.8,0.2,0.3,0.3,0.5\n"
    (audio_root / t1 / f"{t1}_ACTIVATION_CONF.lab").write_text(lab)
    exp.tracks[t1] = ExpectedTrack(t1, {
        "S01": ExpectedStem(("drum set",), "drums", True, a1["S01"]),
        "S02": ExpectedStem(("male singer", "vocalists"), "lead_vocals", True, a1["S02"]),
        "S03": ExpectedStem(("Unlabeled",), "other", False, a1["S03"]),
        "S04": ExpectedStem(("clean electric guitar",), "electric_guitar", True, a1["S04"]),
        "S10": ExpectedStem(("Main System",), "other", True, a1["S10"]),
    }, "Music Delta", "Rock", None, m1, True, True)
    t2 = "Alpha_Beta"
    meta2 = medleydb_metadata(t2, {
        "S01": {"filename": f"{t2}_STEM_01.wav", "instrument": "piano"},
        "S02": {"filename": f"{t2}_STEM_02.wav", "instrument": "electric bass"},
        "S03": {"filename": f"{t2}_STEM_03.wav", "instrument": "acoustic guitar"},
    }, artist="Alpha", title="Beta")
    a2, m2 = write_medleydb_track(audio_root, t2, meta2, metadata_dir=meta_dir, seed=10)
    exp.tracks[t2] = ExpectedTrack(t2, {
        "S01": ExpectedStem(("piano",), "piano", True, a2["S01"]),
        "S02": ExpectedStem(("electric bass",), "electric_bass", True, a2["S02"]),
        "S03": ExpectedStem(("acoustic guitar",), "acoustic_guitar", True, a2["S03"]),
    }, "Alpha", "Beta", None, m2)
    # a folder that is not a track must be ignored
    (audio_root / "notes").mkdir()
    return exp


def build_mixing_secrets(root: Path) -> Expected:
    """Mixing Secrets: pre-summed _STEM_drums/_loops, raw-named stems, an .mp3 mix, a missing mix."""
    exp = Expected("mixing_secrets", root)
    t1 = "Actions_OneMinuteSmile"
    meta1 = medleydb_metadata(t1, {
        "S01": {"filename": f"{t1}_STEM_drums.wav", "instrument": "drum set"},
        "S02": {"filename": f"{t1}_STEM_loops.wav", "instrument": "drum machine"},
        "S03": {"filename": "22_BackingVox6.wav", "instrument": "backingvox"},
        "S04": {"filename": "07_Bass.wav", "instrument": "electric bass"},
    }, origin="Mixing Secrets", artist="Actions", title="OneMinuteSmile", mix_filename=f"{t1}_MIX.mp3")
    meta1["stems"]["S01"]["raw"] = {"R01": {"filename": "01_KickTrigger.wav", "instrument": "KickTrigger"},
                                   "R02": {"filename": "02_Snare.wav", "instrument": "Snare"}}
    a1, _ = write_medleydb_track(root, t1, meta1)
    exp.tracks[t1] = ExpectedTrack(t1, {
        "S01": ExpectedStem(("drum set",), "drums", True, a1["S01"]),
        "S02": ExpectedStem(("drum machine",), "drums", True, a1["S02"]),
        "S03": ExpectedStem(("backingvox",), "backing_vocals", True, a1["S03"]),
        "S04": ExpectedStem(("electric bass",), "electric_bass", True, a1["S04"]),
    }, "Actions", "OneMinuteSmile", None, None, has_mixture=False)
    t2 = "Leaf_Summerghost"
    meta2 = medleydb_metadata(t2, {
        "S01": {"filename": "03_Piano.wav", "instrument": "piano"},
        "S02": {"filename": "04_Gtr.wav", "instrument": "Gtr"},
    }, origin="Mixing Secrets", artist="Leaf", title="Summerghost")
    a2, _ = write_medleydb_track(root, t2, meta2, write_mix=False, seed=5)
    exp.tracks[t2] = ExpectedTrack(t2, {
        "S01": ExpectedStem(("piano",), "piano", True, a2["S01"]),
        "S02": ExpectedStem(("Gtr",), "electric_guitar", True, a2["S02"]),
    }, "Leaf", "Summerghost", None, None, has_mixture=False)
    return exp


# ------------------------------------------------------------------ MUSDB

MUSDB_STEMS = {"drums": ("drums", 1), "bass": ("bass", 2), "other": ("other", 3), "vocals": ("vocals", 4)}


def _musdb_audio(seed: int, seconds: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    stems = {name: make_audio(seconds, SR, 2, seed + i) * 0.5 for i, name in enumerate(MUSDB_STEMS)}
    mix = np.sum(list(stems.values()), axis=0).astype(np.float32)
    return stems, mix


def build_musdb_hq(root: Path) -> Expected:
    exp = Expected("musdb", root)
    for split_dir, native_id, split, seed in [
        ("train", "Actions - One Minute Smile", "valid", 0),
        ("train", "A Band - A Song", "train", 10),
        ("test", "Zeno - Signs", "test", 20),
    ]:
        stems, mix = _musdb_audio(seed, 0.25)
        track_dir = root / split_dir / native_id
        for name, audio in stems.items():
            write_wav(track_dir / f"{name}.wav", data=audio, subtype="FLOAT")
        write_wav(track_dir / "mixture.wav", data=mix, subtype="FLOAT")
        artist, _, title = native_id.partition(" - ")
        exp.tracks[native_id] = ExpectedTrack(native_id, {
            name: ExpectedStem((name,), name, name != "other", stems[name])
            for name in MUSDB_STEMS
        }, artist, title, split, mix)
    return exp


def encode_stem_mp4(path: Path, mixture: np.ndarray, stems: list[np.ndarray], tmp: Path) -> None:
    """Write a 5-stream AAC .stem.mp4 (mixture, drums, bass, other, vocals) with the bundled ffmpeg."""
    import imageio_ffmpeg

    tmp.mkdir(parents=True, exist_ok=True)
    wavs = []
    for i, audio in enumerate([mixture, *stems]):
        p = tmp / f"s{i}.wav"
        write_wav(p, data=audio, subtype="FLOAT")
        wavs.append(p)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    for w in wavs:
        cmd += ["-i", str(w)]
    for i in range(len(wavs)):
        cmd += ["-map", f"{i}:a"]
    cmd += ["-c:a", "aac", "-b:a", "256k", "-f", "mp4", str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True, capture_output=True)
    shutil.rmtree(tmp)


def build_musdb_stems(root: Path) -> Expected:
    exp = Expected("musdb", root)
    for split_dir, native_id, split, seed in [
        ("train", "Leaf - Summerghost", "valid", 3),
        ("test", "Al James - Schoolboy Fascination", "test", 7),
    ]:
        stems, mix = _musdb_audio(seed, 1.0)
        encode_stem_mp4(root / split_dir / f"{native_id}.stem.mp4", mix, list(stems.values()),
                        root.parent / f"_enc_{seed}")
        artist, _, title = native_id.partition(" - ")
        exp.tracks[native_id] = ExpectedTrack(native_id, {
            name: ExpectedStem((name,), name, name != "other", stems[name], lossy=True) for name in MUSDB_STEMS
        }, artist, title, split, mix)
    return exp


# ------------------------------------------------------------------ from the real metadata


def build_from_real_metadata(meta_files, root: Path, *, seconds=0.1, sample_rate=SR) -> dict[str, dict]:
    """A tree from REAL metadata yamls: each copied byte for byte beside short generated audio for
    every stem (and the mix when it is a .wav). Returns {native_id: metadata}.

    Every file holds the same encoded WAV (its content is not what these tests check), so a tree of
    all 330 MedleyDB tracks (2,344 files) is written in about a second.
    """
    import io

    import soundfile as sf

    buf = io.BytesIO()
    frames = int(round(seconds * sample_rate))
    sf.write(buf, make_audio(sample_rate=sample_rate, frames=frames), sample_rate, subtype="PCM_16", format="WAV")
    wav = buf.getvalue()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = {}
    for meta_file in meta_files:
        meta_file = Path(meta_file)
        native_id = meta_file.name[: -len("_METADATA.yaml")]
        text = meta_file.read_bytes()
        meta = yaml.load(text, Loader=loader)
        track_dir = root / native_id
        stem_dir = track_dir / meta["stem_dir"]
        stem_dir.mkdir(parents=True, exist_ok=True)
        for spec in meta["stems"].values():
            (stem_dir / spec["filename"]).write_bytes(wav)
        if str(meta["mix_filename"]).lower().endswith(".wav"):
            (track_dir / meta["mix_filename"]).write_bytes(wav)
        (track_dir / meta_file.name).write_bytes(text)
        out[native_id] = meta
    return out


# ------------------------------------------------------------------ synth (native layout)


def build_synth(root: Path) -> Expected:
    """The synthesizer's native layout: <id>/track.json, mixture.wav, stems/<instrument>.wav,
    notes.parquet (exact note times)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    exp = Expected("synth", root)
    for i, (nid, instruments) in enumerate([("song_0001", ["lead_vocals", "piano", "drums"]),
                                            ("song_0002", ["electric_guitar", "electric_bass"])]):
        track_dir = root / nid
        stems = {inst: write_wav(track_dir / "stems" / f"{inst}.wav", 0.3, subtype="FLOAT", seed=10 * i + k)
                 for k, inst in enumerate(instruments)}
        mix = np.sum(list(stems.values()), axis=0).astype(np.float32)
        write_wav(track_dir / "mixture.wav", data=mix, subtype="FLOAT")
        (track_dir / "track.json").write_text(json.dumps(
            {"artist": "iass synth", "title": f"Song {i}", "seed": i, "duration_s": 0.3}))
        n = len(instruments)
        pq.write_table(pa.table({
            "instrument": instruments, "program": [0] * n, "is_drum": [x == "drums" for x in instruments],
            "pitch": [60] * n, "velocity": [100] * n, "onset_s": [0.0] * n, "offset_s": [0.2] * n,
        }), track_dir / "notes.parquet")
        exp.tracks[nid] = ExpectedTrack(nid, {
            inst: ExpectedStem((inst,), inst, True, stems[inst]) for inst in instruments
        }, "iass synth", f"Song {i}", None, mix)
    return exp
