"""Write N synthesized songs in one layout, on all cores: ``compose -> render -> write``.

Song ``i`` of seed ``K`` depends on ``(K, i)`` only (not on the number of songs, the worker count
or the order in which workers finish) and the soundfont pool, so the same arguments give
byte-identical files and a larger ``--tracks`` adds songs without changing the first ones. The
pool is resolved and checked (:func:`~iass.pipelines.synth.soundfonts.resolve_pool`) before
anything is written; each part then draws its soundfont from it (see that module).
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

from iass.errors import ConfigError
from iass.io import atomic_write_json, clean_temp_files
from iass.pipelines.synth.compose import INSTRUMENTS
from iass.pipelines.synth.layouts import LAYOUTS, write_song
from iass.pipelines.synth.render import SAMPLE_RATE, worker_count

log = logging.getLogger(__name__)

INFO_FILE = "iass_synth.json"   # provenance of a synthesized tree (readers ignore it)


@dataclass(frozen=True)
class SynthJob:
    out: str
    layout: str
    seed: int
    index: int
    duration: float
    instruments: tuple[str, ...] | None
    soundfonts: tuple[tuple[str, str], ...] = ()    # the pool: (absolute path, name) each
    arrangement: str = "real"                       # real | sparse (compose.ARRANGEMENTS)


def synthesize_one(job: SynthJob) -> dict:
    """Compose, render and write one song; a picklable top-level function for process pools."""
    from iass.pipelines.synth.compose import compose_song
    from iass.pipelines.synth.render import part_fonts, render_song
    from iass.pipelines.synth.soundfonts import load

    t0 = time.perf_counter()
    song = compose_song(job.seed, job.index, job.duration, job.instruments, job.arrangement)
    pool = tuple(load(path, name) for path, name in job.soundfonts)
    fonts = part_fonts(song, pool)
    stems, mixture = render_song(song, fonts)
    written = write_song(job.layout, song, stems, mixture, Path(job.out), fonts)
    return {
        "index": job.index,
        "native_id": written["native_id"],
        "split": written["split"],
        "title": song.title,
        "tempo": song.tempo,
        "key": song.key,
        "instruments": list(stems),
        "soundfonts": {inst: fonts[inst].file for inst in stems},
        "samples": int(len(mixture)),
        "seconds": time.perf_counter() - t0,
    }


def check_args(layout: str, tracks: int, duration: float, instruments,
               arrangement: str = "real") -> None:
    """Raise :class:`~iass.errors.ConfigError` (a ``ValueError``) naming the bad option."""
    from iass.pipelines.synth.compose import ARRANGEMENTS

    if arrangement not in ARRANGEMENTS:
        raise ConfigError(f"unknown arrangement {arrangement!r}; choose one of {', '.join(ARRANGEMENTS)}")
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if tracks < 1:
        raise ConfigError(f"--tracks must be at least 1 (got {tracks})")
    if not 2.0 <= duration <= 3600.0:
        raise ConfigError(f"--duration must be between 2 and 3600 seconds (got {duration})")
    if instruments:
        unknown = [i for i in instruments if i not in INSTRUMENTS]
        if unknown:
            raise ConfigError(f"cannot synthesize {', '.join(unknown)}; instruments: {', '.join(INSTRUMENTS)}")


def synthesize(out: str | Path, layout: str, tracks: int, duration: float, seed: int,
               instruments: list[str] | None = None, workers: int = 0,
               progress: bool = True, soundfonts: list[str] | None = None,
               arrangement: str = "real") -> dict:
    """Write ``tracks`` songs to ``out``; returns a summary (songs, audio seconds, speed).
    ``soundfonts``: the pool, builtin names or paths (default: timgm6mb and merlin).
    ``arrangement``: ``real`` (entrances, exits and section lengths shaped like real multitracks)
    or ``sparse`` (every instrument enters and drops out often: more for the activity head)."""
    from iass.pipelines.synth.soundfonts import needed_presets, resolve_pool

    check_args(layout, tracks, duration, instruments, arrangement)
    fonts = resolve_pool(soundfonts, needed_presets(instruments))   # before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_temp_files(out)
    inst = tuple(instruments) if instruments else None
    pool_arg = tuple((sf.path, sf.name) for sf in fonts)
    jobs = [SynthJob(str(out), layout, int(seed), i, float(duration), inst, pool_arg, arrangement)
            for i in range(tracks)]
    n_workers = min(worker_count(workers), len(jobs))
    log.debug("synth: %d songs of %.1f s, layout %s, seed %d, %d workers -> %s",
              len(jobs), duration, layout, seed, n_workers, out)
    t0 = time.perf_counter()
    results = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"synth {layout}", unit="song")
    try:
        if n_workers == 1:
            for job in jobs:
                results.append(synthesize_one(job))
                bar and bar.update(1)
        else:
            # spawn: no forked copy of the parent's state (threads, open files) in the workers
            with cf.ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(synthesize_one, job) for job in jobs]
                for fut in cf.as_completed(futures):
                    results.append(fut.result())
                    bar and bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: r["index"])
    audio_s = sum(r["samples"] for r in results) / SAMPLE_RATE
    stem_s = sum(r["samples"] * len(r["instruments"]) for r in results) / SAMPLE_RATE
    info = {
        "generator": "iass synth",
        "layout": layout,
        "seed": int(seed),
        "tracks": int(tracks),
        "duration_s": float(duration),
        "instruments": list(inst) if inst else None,
        "arrangement": arrangement,
        "sample_rate": SAMPLE_RATE,
        "soundfonts": [sf.describe() for sf in fonts],
        "songs": [{k: r[k] for k in ("index", "native_id", "split", "title", "tempo", "key",
                                     "instruments", "soundfonts")} for r in results],
    }
    atomic_write_json(out / INFO_FILE, info)
    return {
        "out": str(out), "layout": layout, "songs": len(results), "workers": n_workers,
        "soundfonts": [sf.file for sf in fonts],
        "audio_seconds": audio_s, "stem_seconds": stem_s, "wall_seconds": wall,
        "realtime_factor": audio_s / wall if wall > 0 else float("inf"),
        "splits": {s: sum(r["split"] == s for r in results) for s in ("train", "test")
                   if any(r["split"] == s for r in results)},
    }
