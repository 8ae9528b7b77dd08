"""Faults in the corpus build: kill -9 at many points (audio writes, per-track records, activity
shards, tables, the manifest commit, the root mirror) then re-run; a full disk; two builds at once;
readers during a rebuild. Builds run as `iass corpus build` subprocesses reporting to one Prefect
server; kills come from the IASS_FAULT_KILL_AT hook in iass.io (SIGKILL between a complete temp
file and its rename: the worst moment for an atomic writer)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf

from corpus_fixtures import burst, make_sources, medleydb_track
from _reliability import (
    B,
    build_config,
    check_files_whole,
    cli_build_cmd,
    cli_env,
    read_whole_corpus,
    run_cli,
    temp_files,
    write_params,
)
from iass.pipelines.corpus_check import validate_corpus
from iass.pipelines.corpus_format import Corpus


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The four layouts (9 tracks of 3 s, see tests/corpus_fixtures.py)."""
    return make_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="session")
def reference(sources, tmp_path_factory, prefect_api) -> dict:
    """An uninterrupted build: the version every interrupted one must reach."""
    out = tmp_path_factory.mktemp("reference")
    return B.run_build(build_config(sources, out))["manifest"]


# Kill points, in the order a build reaches them; each run resumes the previous one's state.
# (N, GLOB): the N-th atomic write in that run whose file name matches GLOB.
KILLS = [
    ("1:*.wav", "first audio write"),
    ("9:*.wav", "audio, mid-way"),
    ("4:*.json", "a per-track record (after its audio)"),
    ("2:*.parquet", "a per-track activity file"),
    ("2:part-*.parquet", "an activity shard of the snapshot"),
    ("1:tracks.parquet", "tracks.parquet of the snapshot"),
    ("1:rejects.parquet", "rejects.parquet of the snapshot"),
    ("2:manifest.json", "the commit: manifest.json (after the snapshot's copy)"),
    ("2:stems.parquet", "the root mirror of stems.parquet (after the commit)"),
]


@pytest.mark.slow
def test_kill9_at_many_points_then_resume_reaches_the_clean_version(sources, reference, tmp_path,
                                                                    prefect_api):
    out = tmp_path / "corpus"
    params = write_params(tmp_path / "params.yaml")
    cmd = cli_build_cmd(sources, out, params, "--workers", "2")
    published = []
    for point, what in KILLS:
        proc = run_cli(cmd, cli_env(prefect_api, IASS_FAULT_KILL_AT=point))
        assert proc.returncode == -signal.SIGKILL, f"not killed at {point} ({what}): {proc.stderr[-2000:]}"
        counts = check_files_whole(out)  # no torn file under a final name
        if (out / "manifest.json").exists():  # a published version is always whole
            published.append(read_whole_corpus(out)["version"])
            # killed after the commit, mid-way through refreshing the root copies: the snapshot
            # (what readers read) validates; only the root copies are behind until the re-run
            problems = validate_corpus(out, progress=False)
            assert problems and all("of the published corpus_version" in p for p in problems), what
        else:
            assert counts["wav"] or point == KILLS[0][0]
    # the commit point was passed by the last kill only: before it nothing was published
    assert published == [reference["corpus_version"]]
    done = run_cli(cmd, cli_env(prefect_api))
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["corpus_version"] == reference["corpus_version"]
    assert m["counts"] == reference["counts"]
    assert temp_files(out) == [] and not (out / B.LOCK_NAME).exists()
    assert validate_corpus(out, progress=False) == []
    check_files_whole(out)
    seen = read_whole_corpus(out)
    assert seen["version"] == reference["corpus_version"]
    # only this version's snapshot is left
    assert [p.name for p in (out / B.SNAPSHOT_DIR).iterdir()] == [m["corpus_version"][:16]]


def _mount_small_disk(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def _size_cap(limit: int):
    """preexec_fn: every file this process writes is capped at ``limit`` bytes (EFBIG past it)."""
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_the_build_clearly_and_keeps_the_previous_version(sources, tmp_path,
                                                                           prefect_api):
    disk = tmp_path / "disk"
    mounted = _mount_small_disk(disk, "14m")  # as root; else a per-file size cap (RLIMIT_FSIZE)
    try:
        out = disk / "corpus"
        small = {"medleydb": sources["medleydb"]}  # 2 tracks, ~11 MB of float WAVs
        first = B.run_build(build_config(small, out))["manifest"]
        before = {p: p.read_bytes() for p in (out / "manifest.json", out / "tracks.parquet")}
        params = write_params(tmp_path / "params.yaml")
        proc = subprocess.run(cli_build_cmd(sources, out, params), env=cli_env(prefect_api),
                              capture_output=True, text=True, timeout=300,
                              preexec_fn=None if mounted else _size_cap(200_000))
        assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, proc.stderr[-3000:]  # (Prefect may log its own shutdown after it)
        last = errors[0]
        assert last.startswith("error: cannot write the corpus under"), proc.stderr[-3000:]
        assert ("No space left on device" if mounted else "File too large") in last
        assert "the published corpus version (manifest.json) is unchanged" in last
        assert "Traceback" not in proc.stderr
        # the previous version is intact and still the published one; no litter, no lock
        assert {p: p.read_bytes() for p in before} == before
        assert Corpus(out).version == first["corpus_version"]
        assert read_whole_corpus(out)["version"] == first["corpus_version"]
        assert validate_corpus(out, progress=False) == []
        check_files_whole(out)
        assert temp_files(out) == [] and not (out / B.LOCK_NAME).exists()
        # nothing was quarantined for the disk's fault
        assert "rejected" not in proc.stderr
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_second_build_into_the_same_output_is_refused(sources, tmp_path, prefect_api):
    out = tmp_path / "corpus"
    big = dict(sources)
    root = tmp_path / "mdb"
    shutil.copytree(sources["medleydb"], root)
    for i in range(6):  # enough work that the first build is still running
        medleydb_track(root, f"Slow{i:02d}_Song", {
            "S01": ("drum set", burst(6.0, [(0.0, 6.0)], 100.0 + i, seed=i)),
            "S02": ("piano", burst(6.0, [(1.0, 5.0)], 300.0 + i, seed=100 + i))},
            artist=f"Slow {i}", title="Song")
    big["medleydb"] = root
    params = write_params(tmp_path / "params.yaml")
    env = cli_env(prefect_api)
    first = subprocess.Popen(cli_build_cmd(big, out, params, "--workers", "1"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / B.LOCK_NAME).exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.02)
        assert first.poll() is None, "the first build ended before the second could start"
        second = run_cli(cli_build_cmd(big, out, params), env)
        assert first.poll() is None, "the check must happen while the first build runs"
        assert second.returncode == 1
        lines = [ln for ln in second.stderr.strip().splitlines() if " | WARNING | " not in ln]
        assert len(lines) == 1 and lines[0].startswith(f"error: {out / B.LOCK_NAME}: another corpus "
                                                        f"build (pid {first.pid} on "), second.stderr
        with pytest.raises(B.BuildError, match="another corpus build"):  # the library says it too
            B.run_build(build_config(big, out))
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-3000:]
    assert validate_corpus(out, progress=False) == [] and not (out / B.LOCK_NAME).exists()


def test_readers_during_a_rebuild_see_one_whole_version(sources, tmp_path, prefect_api):
    """v1 is published; a rebuild adds 4 tracks, drops one and changes one's audio (v2). Readers opening the corpus
    while v2 is built see v1 or v2 whole, never a mix; a reader that opened v1 before the rebuild
    reads all of v1 after v2 is published (tables from v1's snapshot, the dropped track's audio
    kept one build longer)."""
    out = tmp_path / "corpus"
    v1_sources = dict(sources)
    v1 = B.run_build(build_config(v1_sources, out))["manifest"]
    early = Corpus(out)
    assert early.version == v1["corpus_version"]

    mdb = tmp_path / "mdb"
    shutil.copytree(sources["medleydb"], mdb)
    shutil.rmtree(mdb / "AlphaBand_FirstSong")
    # one track's audio changes: v2 writes it to a new folder, v1's stays for v1's readers
    changed = mdb / "MusicDelta_80sRock" / "MusicDelta_80sRock_STEMS" / "MusicDelta_80sRock_STEM_02.wav"
    sf.write(str(changed), 0.5 * sf.read(str(changed), dtype="float32")[0], 44100, subtype="FLOAT")
    for i in range(4):
        medleydb_track(mdb, f"New{i:02d}_Song", {
            "S01": ("drum set", burst(4.0, [(0.0, 4.0)], 120.0 + i, seed=i)),
            "S02": ("electric bass", burst(4.0, [(0.5, 3.0)], 60.0 + i, seed=50 + i))},
            artist=f"New {i}", title="Song")
    v2_sources = dict(sources, medleydb=mdb)
    params = write_params(tmp_path / "params.yaml")
    proc = subprocess.Popen(cli_build_cmd(v2_sources, out, params, "--workers", "1"),
                            env=cli_env(prefect_api), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: dict[str, int] = {}
    try:
        while proc.poll() is None:
            got = read_whole_corpus(out)  # raises on any mix of versions or a missing file
            seen[got["version"]] = seen.get(got["version"], 0) + 1
        _, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    v2 = json.loads((out / "manifest.json").read_text())
    assert v2["corpus_version"] != v1["corpus_version"]
    assert seen.get(v1["corpus_version"], 0) >= 2, seen  # read the old version while building
    assert set(seen) <= {v1["corpus_version"], v2["corpus_version"]}
    after = read_whole_corpus(out)
    assert after["version"] == v2["corpus_version"] and len(after["tracks"]) == 9 - 1 + 4
    # the reader opened before the rebuild still reads all of v1, consistently
    old = read_whole_corpus_from(early)
    assert old == v1["counts"]["tracks"]
    assert validate_corpus(out, progress=False) == []


def read_whole_corpus_from(c: Corpus) -> int:
    """Read every track of an already open Corpus (its tables were loaded lazily, now): the audio
    is the very bytes its version's tables describe."""
    from iass.io import file_digest

    n = 0
    for tid in c.track_ids():
        row = c.track(tid)
        assert c.read_mixture(tid).shape == (row["num_samples"], 2)
        assert file_digest(c.root / row["mixture_path"]) == row["mixture_sha256"], tid
        for s in c.stems.filter(c.stems["track_id"] == tid).iter_rows(named=True):
            assert file_digest(c.root / s["path"]) == s["sha256"], (tid, s["instrument"])
        assert c.activity_frame(tid).height == len(row["instruments"]) * row["num_frames"]
        n += 1
    return n
