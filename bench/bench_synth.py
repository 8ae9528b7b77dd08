"""Synthesis speed: seconds of multitrack audio written per second per core.

Measured in one process (one core) on songs of 20 s in the native layout:
- ``bare_soundfont``: tinysoundfont alone rendering every part's notes (the floor: the soundfont
  synthesis nobody can avoid);
- ``full``: compose + render (gate, level, pan, peak normalisation, 24-bit grid) + write the
  native layout (float WAVs, notes.parquet, track.json, song.mid);
then the same songs on all cores through ``iass synth``'s process pool. Ratios compare against
the bare soundfont measured in the same run.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SONGS = 6
DURATION = 20.0
SEED = 1234


def main() -> dict:
    from iass.pipelines.synth.compose import compose_song
    from iass.pipelines.synth.generate import synthesize
    from iass.pipelines.synth.render import SAMPLE_RATE, render_part_raw, worker_count

    songs = [compose_song(SEED, i, DURATION) for i in range(SONGS)]
    n = int(DURATION * SAMPLE_RATE)
    stem_seconds = sum(len(s.parts) for s in songs) * DURATION
    audio_seconds = SONGS * DURATION

    t0 = time.process_time()
    for song in songs:
        for part in song.parts:
            render_part_raw(part, n)
    bare = time.process_time() - t0

    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        t0 = time.process_time()
        synthesize(Path(tmp) / "one", "native", SONGS, DURATION, SEED, workers=1, progress=False)
        full = time.process_time() - t0

        cores = worker_count(0)
        t0 = time.perf_counter()
        synthesize(Path(tmp) / "all", "native", SONGS, DURATION, SEED, workers=cores, progress=False)
        wall_all = time.perf_counter() - t0

        t0 = time.perf_counter()
        synthesize(Path(tmp) / "stems", "musdb-stems", 2, DURATION, SEED, workers=1, progress=False)
        wall_aac = time.perf_counter() - t0

    result = {
        "songs": SONGS,
        "song_seconds": DURATION,
        "stems_per_song": round(stem_seconds / audio_seconds, 2),
        "bare_soundfont_stem_s_per_cpu_s": stem_seconds / bare,
        "full_song_s_per_cpu_s": audio_seconds / full,
        "full_stem_s_per_cpu_s": stem_seconds / full,
        "full_over_bare_cpu_time": full / bare,
        "cores": cores,
        "all_cores_song_s_per_wall_s": audio_seconds / wall_all,
        "musdb_stems_aac_song_s_per_wall_s": 2 * DURATION / wall_aac,
        "cpu_count": os.cpu_count(),
    }
    for k, v in result.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    return result


if __name__ == "__main__":
    main()
