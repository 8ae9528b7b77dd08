"""Corpus build throughput against a bare read+write baseline, no-change rebuild, peak memory.

    .venv/bin/python bench/bench_build.py [--tracks 24] [--seconds 60] [--stems 4] [--workers 2] [--rounds 5]

* bare baseline (same process): read every source WAV with soundfile and write the same samples
  once (float32 WAV), each file fsync'ed as the build's atomic writes are -- the least any build
  that loses nothing on a crash must do. The same without fsync (``page_cache``) is reported
  beside it: its time depends on the kernel's writeback and moved 3.6 - 5.2 s between rounds of
  one run.
* full build: the Prefect flow ``build_corpus`` (threads runner), timed inside the flow so the
  one-off start of Prefect's embedded server is reported apart.
* ``rounds`` alternations of bare and a full build into an empty folder (24 min of audio each:
  a minute or more of work in all, so that a ratio can be read on a shared machine); the ratio
  reported is the median of the rounds' build / bare, with the smallest and largest. Before the
  rounds, one untimed bare pass (on a VM the first pass over fresh memory runs ~2x slower); before
  each timed part, ``os.sync()`` (untimed), so neither pays for writing back the other's pages.
* no-change rebuild: the same call again; reported as % of the full build.
* by the user's clock, each a new process (:func:`user_clock`): ``iass corpus build`` with
  nothing changed, and ``dvc repro`` after a split param changed, with nothing changed, and after
  one track's metadata changed.
* peak memory: a fresh process per corpus size (N and 4N tracks of ``--memory-tracks``), ru_maxrss
  after the build.

Targets: build / bare <= 1.3 (issue 23; 1.5 in issue 8); rebuild < 5 %; peak memory independent
of the number of tracks.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELS = ["drum set", "electric bass", "piano", "male singer", "clean electric guitar",
          "acoustic guitar", "violin", "trumpet"]


def make_medleydb(root: Path, tracks: int, seconds: float, stems: int, seed: int = 0) -> float:
    """MedleyDB-layout tracks of noise-modulated tones (16-bit PCM, as the release). Audio seconds."""
    import soundfile as sf
    import yaml

    sr = 44100
    n = int(seconds * sr)
    rng = np.random.default_rng(seed)
    for k in range(tracks):
        nid = f"Bench{k:03d}_Song{k:03d}"
        tdir = root / nid
        (tdir / f"{nid}_STEMS").mkdir(parents=True, exist_ok=True)
        total = np.zeros((n, 2), np.float32)
        meta = {}
        for s in range(stems):
            t = np.arange(n) / sr
            env = (np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6)) > 0)
            x = (0.2 * np.sin(2 * np.pi * rng.uniform(80, 900) * t) * env).astype(np.float32)
            x += (0.005 * rng.standard_normal(n)).astype(np.float32)
            a = np.stack([x, 0.9 * x], axis=1)
            total += a
            fname = f"{nid}_STEM_{s + 1:02d}.wav"
            sf.write(str(tdir / f"{nid}_STEMS" / fname), a, sr, subtype="PCM_16")
            meta[f"S{s + 1:02d}"] = {"component": "", "filename": fname,
                                     "instrument": LABELS[s % len(LABELS)], "raw": {}}
        sf.write(str(tdir / f"{nid}_MIX.wav"), np.clip(total, -1, 1), sr, subtype="PCM_16")
        (tdir / f"{nid}_METADATA.yaml").write_text(yaml.safe_dump({
            "artist": f"Bench {k}", "title": f"Song {k}", "mix_filename": f"{nid}_MIX.wav",
            "stem_dir": f"{nid}_STEMS", "stems": meta, "origin": "bench"}))
    return tracks * seconds


def bare_baseline(src: Path, dst: Path, durable: bool = True) -> float:
    """Seconds to read every source WAV and write its samples once (float32 WAV). ``durable``:
    each written file is fsync'ed, as the build's atomic writes do: without it the baseline's time
    is whatever the kernel's writeback does meanwhile (one run's rounds: 3.6 s three times, 5.2 s
    twice, for the same work), and it compares a write that may still be lost with one that
    cannot."""
    import soundfile as sf

    t0 = time.perf_counter()
    for p in sorted(src.rglob("*.wav")):
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), data, sr, subtype="FLOAT")
        if durable:   # as iass.io.atomic_path does after writing
            with open(out, "rb+") as fh:
                os.fsync(fh.fileno())
    return time.perf_counter() - t0


def _cfg(src: Path, out: Path, workers: int):
    from iass.config import load_params
    from iass.pipelines.build import config_from_params

    return config_from_params(load_params(), sources={"medleydb": str(src)}, out=str(out),
                              runner="threads", workers=workers, progress=False)


def peak_memory_mb(tracks: int, seconds: float, stems: int, workers: int) -> float:
    """ru_maxrss of a fresh process that generates and builds a corpus of ``tracks`` tracks."""
    code = f"""
import resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {str(REPO / 'bench')!r})
import bench_build as b
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    b.make_medleydb(d / 'src', {tracks}, {seconds}, {stems}, seed=1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from iass.pipelines.build import run_build
    run_build(b._cfg(d / 'src', d / 'out', {workers}))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def _timed_run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def user_clock(repo: Path, src: Path, out: Path, workers: int) -> dict:
    """Wall seconds of what a user runs, each as a new process, on a corpus already built from
    ``src`` into ``out`` (both inside ``repo``, a scratch git + DVC repository):

    * ``iass corpus build`` with nothing changed (best of 2);
    * ``dvc repro`` of a one-stage pipeline (that command; the source and the corpus as DVC
      dep/out): first run, which records the lock (the build finds nothing to do), then after a
      split param changed (the stage reruns; no track has audio work: only the tables), then
      with nothing changed (DVC alone), then after one track's metadata changed (that track is
      rebuilt: Prefect's server starts)."""
    import shutil

    import yaml

    bin_dir = Path(sys.executable).parent
    iass, dvc = str(bin_dir / "iass"), str(bin_dir / "dvc")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"]["workers"] = workers
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    build = [iass, "corpus", "build", "--params", "params.yaml", "--source",
             f"medleydb={src.relative_to(repo)}", "--out", str(out.relative_to(repo)), "--no-progress"]
    res = {"cli_nochange_wall_s": round(min(_timed_run(build, repo) for _ in range(2)), 2)}
    if shutil.which("git") is None:
        return res
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"corpus": {
        "cmd": " ".join(build), "deps": [str(src.relative_to(repo))],
        "params": ["corpus.splits", "corpus.labels"],
        "outs": [{str(out.relative_to(repo)): {"persist": True, "cache": False}}]}}}))
    res["dvc_repro_first_wall_s"] = round(_timed_run([dvc, "repro", "-q"], repo), 2)
    params["corpus"]["splits"]["seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res["dvc_repro_split_change_wall_s"] = round(_timed_run([dvc, "repro", "-q"], repo), 2)
    res["dvc_repro_nochange_wall_s"] = round(_timed_run([dvc, "repro", "-q"], repo), 2)
    meta = sorted(src.glob("*/*_METADATA.yaml"))[0]
    doc = yaml.safe_load(meta.read_text())
    doc["title"] += " (remastered)"
    meta.write_text(yaml.safe_dump(doc))
    res["dvc_repro_one_track_changed_wall_s"] = round(_timed_run([dvc, "repro", "-q"], repo), 2)
    return res


def main(tracks: int = 24, seconds: float = 60.0, stems: int = 4, workers: int = 2,
         memory: bool = True, rounds: int = 5, memory_tracks: int = 8, user: bool = True) -> dict:
    import shutil

    from iass.pipelines.build import run_build

    with tempfile.TemporaryDirectory(prefix="bench_build_") as d:
        d = Path(d)
        src, out = d / "repo" / "src", d / "repo" / "out"
        audio_s = make_medleydb(src, tracks, seconds, stems)
        make_medleydb(d / "warm", 1, 2.0, 2, seed=9)
        t0 = time.perf_counter()
        run_build(_cfg(d / "warm", d / "warm_out", workers))  # starts Prefect's embedded server
        prefect_start = time.perf_counter() - t0
        bare_baseline(src, d / "bare")  # untimed: the first pass over fresh memory is slower

        bares, cached, builds, walls = [], [], [], []
        for _ in range(rounds):  # alternate: load changes on a shared machine hit both alike
            shutil.rmtree(d / "bare", ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            os.sync()  # each timed part starts with no dirty pages of another part to write back
            bares.append(bare_baseline(src, d / "bare"))
            shutil.rmtree(d / "bare", ignore_errors=True)
            os.sync()
            cached.append(bare_baseline(src, d / "bare", durable=False))
            shutil.rmtree(d / "bare", ignore_errors=True)
            os.sync()
            t0 = time.perf_counter()
            full = run_build(_cfg(src, out, workers))
            walls.append(time.perf_counter() - t0)
            builds.append(full["elapsed_s"])
        ratios = sorted(b / a for a, b in zip(bares, builds))
        cached_ratios = sorted(b / a for a, b in zip(cached, builds))
        bare, full_wall = float(np.median(bares)), float(np.median(walls))
        build_s = float(np.median(builds))
        t0 = time.perf_counter()
        again = run_build(_cfg(src, out, workers))
        rebuild_wall = time.perf_counter() - t0
        assert again["stats"]["built"] == 0, again["stats"]
        clock = user_clock(d / "repo", src, out, workers) if user else {}

    result = {
        "tracks": tracks, "seconds_per_track": seconds, "stems_per_track": stems,
        "workers": workers, "audio_seconds": audio_s,
        "rounds": rounds, "timed_work_s": round(sum(bares) + sum(cached) + sum(walls), 1),
        "bare_s": round(bare, 3), "bare_throughput": round(audio_s / bare, 1),
        "build_s": round(build_s, 3), "build_wall_s": round(full_wall, 3),
        "build_throughput": round(audio_s / build_s, 1),
        "build_over_bare": round(float(np.median(ratios)), 3),
        "build_over_bare_min": round(ratios[0], 3), "build_over_bare_max": round(ratios[-1], 3),
        "bare_rounds_s": [round(x, 2) for x in bares], "build_rounds_s": [round(x, 2) for x in builds],
        "build_over_page_cache_bare": round(float(np.median(cached_ratios)), 3),
        "build_over_page_cache_bare_min": round(cached_ratios[0], 3),
        "build_over_page_cache_bare_max": round(cached_ratios[-1], 3),
        "page_cache_bare_rounds_s": [round(x, 2) for x in cached],
        "rebuild_s": round(again["elapsed_s"], 3), "rebuild_wall_s": round(rebuild_wall, 3),
        "rebuild_pct_of_build": round(100 * again["elapsed_s"] / build_s, 2),
        "rebuild_wall_pct_of_build_wall": round(100 * rebuild_wall / full_wall, 2),
        "prefect_first_flow_s": round(prefect_start, 2),
        **clock,
    }
    if memory:  # flatness needs no long tracks: N and 4N tracks of 30 s
        small = peak_memory_mb(memory_tracks, 30.0, stems, workers)
        large = peak_memory_mb(4 * memory_tracks, 30.0, stems, workers)
        result.update({"peak_mb_n": round(small, 1), "peak_mb_4n": round(large, 1),
                       "peak_ratio_4n_over_n": round(large / small, 3)})
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory-tracks", type=int, default=8)
    ap.add_argument("--stems", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-user-clock", action="store_true", help="skip the CLI and dvc repro timings")
    a = ap.parse_args()
    main(a.tracks, a.seconds, a.stems, a.workers, not a.no_memory, a.rounds, a.memory_tracks,
         not a.no_user_clock)
