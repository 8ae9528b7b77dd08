"""Load and soak: a corpus build of many short synthesized tracks with peak memory independent of
the number of tracks, and a training-loader soak (10,000 chunks across 4 worker processes) whose
resident memory does not grow.

Build: the same build (synth layout, 0.5 s tracks with exact note labels) of N_SMALL and N_LARGE
tracks, each in a fresh process that reports its own peak RSS; the result is the ratio
peak(N_LARGE) / peak(N_SMALL) (target: ~1, i.e. < 1.2) and the build rate in tracks per second.
Builds report to one temporary Prefect server started here (as the test suite does).

Soak: TrainChunks (training/data.py) over the built corpus, 4 spawned workers, batches of 16;
RSS of the main process plus its workers after a warm-up vs at the end (target: growth < 10 %).

    python -m bench reliability            (or: python bench/bench_reliability.py [N_LARGE])
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SR = 44100
N_SMALL, N_LARGE, SECONDS = 200, 1000, 0.5
SOAK_CHUNKS, SOAK_WORKERS, SOAK_BATCH, WARMUP_BATCHES = 10_000, 4, 16, 60
INSTRUMENTS = ("piano", "electric_bass", "drums", "lead_vocals")


def write_synth_sources(root: Path, n: int, seconds: float = SECONDS) -> None:
    """``n`` tracks in the synthesizer's native layout: track.json, stems/<instrument>.wav,
    mixture.wav (the stems' sum), notes.parquet (exact activity). Tone bursts with gaps."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    samples = int(seconds * SR)
    t = np.arange(samples) / SR
    for i in range(n):
        tdir = root / f"song-{i:05d}"
        (tdir / "stems").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        picked = [INSTRUMENTS[j] for j in sorted(rng.choice(len(INSTRUMENTS), 2, replace=False))]
        mix = np.zeros((samples, 2))
        rows = {k: [] for k in ("instrument", "program", "is_drum", "pitch", "velocity", "onset_s", "offset_s")}
        for k, inst in enumerate(picked):
            on = float(rng.uniform(0, seconds / 2))
            off = float(rng.uniform(on + 0.05, seconds))
            gate = (t >= on) & (t < off)
            x = 0.3 * np.sin(2 * np.pi * (110 * (k + 1) + i % 50) * t) * gate
            audio = np.stack([x, 0.8 * x], axis=1)
            sf.write(str(tdir / "stems" / f"{inst}.wav"), audio, SR, subtype="PCM_16")
            mix += audio
            for col, v in zip(rows, (inst, 0, inst == "drums", 60, 100, on, off)):
                rows[col].append(v)
        sf.write(str(tdir / "mixture.wav"), mix, SR, subtype="PCM_16")
        pq.write_table(pa.table(rows), str(tdir / "notes.parquet"))
        (tdir / "track.json").write_text(json.dumps({
            "artist": f"Bench {i % 97}", "title": f"Song {i}", "duration_s": seconds,
            "instruments": picked}))


BUILD_CHILD = """
import json, resource, sys, time
from iass.pipelines import build as B
params = {"corpus": {"hop": 1024, "num_shards": 16, "workers": 2, "runner": "threads",
                     "splits": {"seed": 0}}}
cfg = B.config_from_params(params, sources={"synth": sys.argv[1]}, out=sys.argv[2], progress=False)
t = time.perf_counter()
res = B.run_build(cfg)
print(json.dumps({"seconds": time.perf_counter() - t, "tracks": res["manifest"]["counts"]["tracks"],
                  "rejects": res["manifest"]["counts"]["rejects"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_in_child(sources: Path, out: Path, api_url: str) -> dict:
    env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.run([sys.executable, "-c", BUILD_CHILD, str(sources), str(out)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tree_rss_mb() -> float:
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def soak(corpus: Path, chunks: int = SOAK_CHUNKS, workers: int = SOAK_WORKERS,
         batch: int = SOAK_BATCH, warmup: int = WARMUP_BATCHES,
         targets: tuple[str, ...] = ("piano", "bass", "drums")) -> dict:
    """Stream ``chunks`` training chunks; RSS of the process tree after ``warmup`` batches vs end."""
    import warnings

    import torch

    from iass.training.data import ChunkConfig, StepBatchSampler, TrainChunks, loader_options

    cfg = ChunkConfig(targets=tuple(targets), chunk_samples=int(0.25 * SR), hop=1024)
    steps = chunks // batch
    # more workers than this 2-core machine has cores is the point of a soak: quiet torch's advice
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    loader = torch.utils.data.DataLoader(TrainChunks(corpus, cfg), batch_sampler=StepBatchSampler(0, steps, batch),
                                         **loader_options(workers))
    seen, rss_warm, rss_end, t0, samples = 0, None, None, time.perf_counter(), []
    for b, example in enumerate(loader):
        seen += len(example[0])
        if b == warmup:
            rss_warm = tree_rss_mb()
            t0 = time.perf_counter()
        if b % 50 == 0:
            samples.append(round(tree_rss_mb(), 1))
        if b == steps - 1:  # the last batch, while the workers are still alive
            rss_end = tree_rss_mb()
    return {"chunks": seen, "workers": workers, "rss_warm_mb": round(rss_warm, 1),
            "rss_end_mb": round(rss_end, 1), "rss_growth": rss_end / rss_warm - 1,
            "chunks_per_s": (seen - (warmup + 1) * batch) / (time.perf_counter() - t0),
            "rss_samples_mb": samples}


def main(n_large: int = N_LARGE) -> dict:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from iass.pipelines.build import prefect_environment

    prefect_environment()  # Prefect's offline defaults, before Prefect is imported
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_reliability_") as tmp, prefect_test_harness():
        tmp = Path(tmp)
        api = PREFECT_API_URL.value()
        for n in (N_SMALL, n_large):
            write_synth_sources(tmp / f"src{n}", n)
            r = build_in_child(tmp / f"src{n}", tmp / f"corpus{n}", api)
            results[f"build_{n}"] = r
            print(f"build of {n} tracks: {r['tracks']} built, {r['rejects']} rejected, "
                  f"{r['seconds']:.1f} s ({n / r['seconds']:.1f} tracks/s), peak RSS {r['peak_rss_mb']:.0f} MB",
                  flush=True)
        small, large = results[f"build_{N_SMALL}"], results[f"build_{n_large}"]
        results["build_peak_rss_ratio"] = large["peak_rss_mb"] / small["peak_rss_mb"]
        results["build_tracks_ratio"] = n_large / N_SMALL
        print(f"peak RSS x{results['build_peak_rss_ratio']:.3f} for x{results['build_tracks_ratio']:.0f} "
              f"the tracks (target < 1.2)", flush=True)
        s = soak(tmp / f"corpus{n_large}")
        results["soak"] = s
        print(f"loader soak: {s['chunks']} chunks, {s['workers']} workers, RSS {s['rss_warm_mb']:.0f} -> "
              f"{s['rss_end_mb']:.0f} MB ({100 * s['rss_growth']:+.1f} %, target < 10 %), "
              f"{s['chunks_per_s']:.0f} chunks/s", flush=True)
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else N_LARGE)
