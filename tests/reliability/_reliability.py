"""Helpers of the reliability suite (fixtures are in conftest.py): CLI builds in subprocesses, and a
checker that every file of a corpus directory is whole (no torn write under a final name)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from iass import REPO_ROOT
from iass.io import TMP_MARK, wav_header
from iass.pipelines import build as B

#: small corpus params (4 shards, 2 workers), as tests/test_build.py uses
PARAMS = {"corpus": {"hop": 1024, "num_shards": 4, "workers": 2, "runner": "threads",
                     "labels": {"threshold": 0.5},
                     "splits": {"seed": 0, "song_level_artists": ["iass synth"]}}}


def build_config(sources: dict[str, Path], out: Path, **kw) -> B.BuildConfig:
    params = json.loads(json.dumps(PARAMS))
    params["corpus"].update(kw.pop("corpus", {}))
    return B.config_from_params(params, sources={k: str(v) for k, v in sources.items()},
                                out=str(out), progress=False, **kw)


def write_params(path: Path, **corpus) -> Path:
    params = json.loads(json.dumps(PARAMS))
    params["corpus"].update(corpus)
    path.write_text(yaml.safe_dump(params))
    return path


def cli_build_cmd(sources: dict[str, Path], out: Path, params: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "iass.cli", "corpus", "build", "--out", str(out), "--no-progress",
           "--params", str(params)]
    for name, root in sorted(sources.items()):
        cmd += ["--source", f"{name}={root}"]
    return cmd + list(extra)


def cli_env(api_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IASS_FAULT_KILL_AT"}
    env.update(PREFECT_API_URL=api_url, PYTHONUNBUFFERED="1",
               PREFECT_HOME=str(REPO_ROOT / ".prefect"), PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(extra)
    return env


def run_cli(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob(f"*{TMP_MARK}*"))


def check_files_whole(root: Path) -> dict[str, int]:
    """Every file under its final name is complete: WAVs decode to the length their header
    declares and fill the file exactly, Parquet reads, JSON / YAML parse. Temp files (a killed
    writer's litter) are skipped: they are never read. Returns counts per kind."""
    import pyarrow.parquet as pq
    import soundfile as sf

    counts = {"wav": 0, "parquet": 0, "json": 0, "yaml": 0}
    for p in sorted(Path(root).rglob("*")):
        if not p.is_file() or TMP_MARK in p.name or p.name == B.LOCK_NAME:
            continue
        if p.suffix == ".wav":
            info = sf.info(str(p))
            data, _ = sf.read(str(p), dtype="float32", always_2d=True)
            assert data.shape == (info.frames, info.channels), p
            # our WAVs: the float header (fmt + fact + data) + raw samples, nothing more
            header = len(wav_header(info.frames, info.channels, info.samplerate, "FLOAT"))
            assert p.stat().st_size == header + data.size * 4, f"{p}: size does not match its header"
            counts["wav"] += 1
        elif p.suffix == ".parquet":
            pq.read_table(p)
            counts["parquet"] += 1
        elif p.suffix == ".json":
            json.loads(p.read_text())
            counts["json"] += 1
        elif p.suffix == ".yaml":
            yaml.safe_load(p.read_text())
            counts["yaml"] += 1
    return counts


def read_whole_corpus(root: Path) -> dict:
    """Open the published version through the reader and read every table, activity row and audio
    file it names; raises if anything is missing or inconsistent. Returns what was seen."""
    import numpy as np

    from iass.pipelines.corpus_format import Corpus

    c = Corpus(root)
    m = c.manifest
    ids = c.track_ids()
    assert len(ids) == m["counts"]["tracks"], (len(ids), m["counts"])
    assert c.stems.height == m["counts"]["stems"]
    assert c.rejects.height == m["counts"]["rejects"]
    rows = 0
    for tid in ids:
        row = c.track(tid)
        mix = c.read_mixture(tid)
        assert mix.shape == (row["num_samples"], 2) and np.isfinite(mix).all()
        for inst in row["instruments"]:
            assert c.read_instrument(tid, inst).shape == mix.shape
        frame = c.activity_frame(tid)
        assert frame.height == len(row["instruments"]) * row["num_frames"], tid
        rows += frame.height
    assert rows == m["counts"]["activity_rows"]
    return {"version": c.version, "tracks": set(ids), "activity_rows": rows}
