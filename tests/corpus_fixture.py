"""A small built corpus in the REAL corpus format (pipelines/corpus_format.py), for training tests.

Each track holds tonal stems (a fundamental + 2 harmonics, a different pitch per instrument) that
are ON only inside known sample regions, so the activity labels are exact and tests can recompute
them independently: frame ``t`` is active iff its centre sample ``t * hop`` lies in a region.
The tables use the format's schemas, the WAVs are float stereo at 44.1 kHz, the manifest has the
keys the reader relies on. One MUSDB-like track leaves the guitars and the piano unknown (they
would be inside its ``other`` stem).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from iass import REGISTRY_DIR
from iass.io import atomic_write_json, atomic_write_parquet, file_digest, stable_hash, write_wav
from iass.pipelines import corpus_format as cf

SR = cf.SAMPLE_RATE

#: instrument -> fundamental (Hz); each target gets its own register so a model can learn it
PITCH = {
    "lead_vocals": 440.0, "drums": 150.0, "electric_bass": 55.0, "electric_guitar": 330.0,
    "acoustic_guitar": 262.0, "piano": 523.0, "organ": 784.0, "other": 1046.0,
    "backing_vocals": 587.0,
}


@dataclass
class FixtureTrack:
    native_id: str
    split: str
    seconds: float
    stems: dict[str, list[tuple[float, float]]]   # instrument -> active regions (s)
    source: str = "synth"
    unknown: list[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * SR))


def tone(instrument: str, n: int, seed: int) -> np.ndarray:
    """(n, 2) a steady harmonic tone; the right channel is quieter (so a channel swap shows)."""
    t = np.arange(n) / SR
    f0 = PITCH[instrument]
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    mono = sum(a * np.sin(2 * np.pi * f0 * h * t + p) for a, h, p in zip((0.3, 0.15, 0.08), (1, 2, 3), phase))
    return np.stack([mono, 0.6 * mono], 1).astype(np.float32)


def gate(regions: list[tuple[float, float]], n: int) -> np.ndarray:
    """(n,) 1 inside the active regions (in samples), else 0."""
    g = np.zeros(n, dtype=np.float32)
    for a, b in regions:
        g[int(round(a * SR)):int(round(b * SR))] = 1.0
    return g


def frame_labels(regions: list[tuple[float, float]], n_samples: int, hop: int) -> np.ndarray:
    """The exact labels: frame t is active iff sample t * hop is inside a region."""
    g = gate(regions, n_samples)
    centres = cf.frame_centers(cf.num_frames(n_samples, hop), hop)
    return np.array([g[c] if c < n_samples else 0.0 for c in centres], dtype=np.float32)


def default_tracks(seconds: float = 3.0) -> list[FixtureTrack]:
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


def write_fixture_corpus(root: str | Path, tracks: list[FixtureTrack] | None = None, hop: int = 256,
                         num_shards: int = 4) -> dict:
    """Write the corpus; return {track_id: FixtureTrack} (the ground truth)."""
    def render(n_track: int, k: int, inst: str, regions, n: int):
        if not regions:
            return None                                   # absent instruments have no stem
        return tone(inst, n, seed=1000 * n_track + k) * gate(regions, n)[:, None]

    return write_corpus(root, tracks if tracks is not None else default_tracks(), render, hop,
                        num_shards, built_by="tests/corpus_fixture.py")


def write_corpus(root: str | Path, tracks: list, render, hop: int, num_shards: int,
                 built_by: str, artist: str = "fixture") -> dict:
    """Fixture tracks (``native_id, split, stems {instrument: regions}, source, unknown,
    num_samples``) written in the real corpus format: stems rendered by ``render(n_track, k,
    instrument, regions, n) -> (n, 2) float32`` (None: no stem), mixture = their sum, exact
    labels from the regions (``other`` = unknown), the tables with the format's schemas and a
    manifest. Shared by this module and ``eval_corpus_fixture``. Returns {track_id: track}."""
    root = Path(root)
    layout = cf.CorpusLayout(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REGISTRY_DIR / "taxonomy.yaml", layout.taxonomy)
    from iass.pipelines.taxonomy import load_taxonomy

    tax = load_taxonomy(layout.taxonomy)
    track_rows, stem_rows, act_rows, truth = [], [], {}, {}
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
            write_wav(root / rel, audio, SR)
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
        mix_rel = layout.rel_audio(shard, tid, "mixture")
        write_wav(root / mix_rel, mixture, SR)
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
    version = stable_hash([r["mixture_sha256"] for r in track_rows] + [r["sha256"] for r in stem_rows], 16)
    atomic_write_json(layout.manifest, {
        "format_version": cf.FORMAT_VERSION, "corpus_version": version,
        "taxonomy_sha256": tax.sha256, "params": {"hop": hop, "sample_rate": SR},
        "counts": {"tracks": len(track_rows), "stems": len(stem_rows)}, "built_by": built_by,
    })
    return truth
