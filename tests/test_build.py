"""The corpus build flow end to end on generated fixtures of all four layouts."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from corpus_fixtures import SR, burst, make_sources, medleydb_track
from iass.pipelines import build as B
from iass.pipelines.corpus_check import corpus_info, validate_corpus
from iass.pipelines.corpus_format import (
    ACTIVITY_SCHEMA,
    STEMS_SCHEMA,
    TRACKS_SCHEMA,
    Corpus,
    CorpusLayout,
    make_track_id,
)
from test_activity import reference_centered_energy, reference_confidence

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"corpus": {"hop": 1024, "num_shards": 4, "workers": 2, "runner": "threads",
                     "labels": {"threshold": 0.5},
                     "splits": {"seed": 0, "song_level_artists": ["iass synth"]}}}


@pytest.fixture(scope="module", autouse=True)
def prefect_harness():
    """One temporary Prefect server for the module (starting one per flow run costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):   # a loaded 2-core machine starts it slowly
        yield


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    return make_sources(tmp_path_factory.mktemp("sources"))


def _cfg(sources, out, **kw) -> B.BuildConfig:
    params = json.loads(json.dumps(PARAMS))
    for key, value in kw.pop("corpus", {}).items():
        params["corpus"][key] = value
    return B.config_from_params(params, sources={k: str(v) for k, v in sources.items()},
                                out=str(out), progress=False, **kw)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    result = B.run_build(_cfg(sources, out))
    return out, result


def _mtimes(root: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob(pattern)}


# ------------------------------------------------------------------------------ the format
def test_tables_follow_the_format(built):
    out, result = built
    layout = CorpusLayout(out)
    assert pq.read_schema(layout.tracks).remove_metadata().equals(TRACKS_SCHEMA)
    assert pq.read_schema(layout.stems).remove_metadata().equals(STEMS_SCHEMA)
    for part in layout.activity_dir.glob("part-*.parquet"):
        assert pq.read_schema(part).remove_metadata().equals(ACTIVITY_SCHEMA)
    m = json.loads(layout.manifest.read_text())
    assert m["format_version"] == 1 and m["params"]["hop"] == 1024
    assert m["counts"]["tracks"] == 9 and m["counts"]["rejects"] == 0
    assert m["taxonomy"]["sha256"] and set(m["label_maps"]) == {"medleydb", "mixing_secrets", "musdb", "synth"}
    assert (out / "taxonomy.yaml").read_bytes() == (REPO / "datasets" / "taxonomy.yaml").read_bytes()
    assert str(out) not in layout.manifest.read_text()  # no absolute path
    assert result["stats"]["built"] == 9
    assert validate_corpus(out, progress=False) == []


def test_audio_is_summed_per_instrument_and_mixture_written(built, sources):
    out, _ = built
    c = Corpus(out)
    tid = make_track_id("medleydb", "MusicDelta_80sRock")
    src = sources["medleydb"] / "MusicDelta_80sRock" / "MusicDelta_80sRock_STEMS"
    drums, _ = sf.read(src / "MusicDelta_80sRock_STEM_01.wav", dtype="float32")
    np.testing.assert_array_equal(c.read_instrument(tid, "drums"), drums)
    mix = c.read_mixture(tid)
    total = sum(c.read_instrument(tid, i) for i in c.track(tid)["instruments"])
    np.testing.assert_allclose(mix, total, atol=1e-5)
    assert c.track(tid)["num_frames"] == mix.shape[0] // 1024 + 1
    # two stems of one canonical instrument are summed into one file
    tid = make_track_id("medleydb", "AlphaBand_FirstSong")
    src = sources["medleydb"] / "AlphaBand_FirstSong" / "AlphaBand_FirstSong_STEMS"
    s3, _ = sf.read(src / "AlphaBand_FirstSong_STEM_03.wav", dtype="float32")
    s4, _ = sf.read(src / "AlphaBand_FirstSong_STEM_04.wav", dtype="float32")
    np.testing.assert_array_equal(c.read_instrument(tid, "electric_guitar"), s3 + s4)
    row = c.stems.filter((c.stems["track_id"] == tid) & (c.stems["instrument"] == "electric_guitar")).row(0, named=True)
    assert row["source_stems"] == ["S03", "S04"]
    assert row["source_labels"] == ["clean electric guitar", "distorted electric guitar"]


def test_labels_match_independent_activation_confidence(built):
    out, _ = built
    c = Corpus(out)
    for source, nid in (("medleydb", "MusicDelta_80sRock"), ("musdb", "Gamma Trio - Third Song")):
        tid = make_track_id(source, nid)
        insts = c.track(tid)["instruments"]
        H = np.stack([reference_centered_energy(c.read_instrument(tid, i).mean(axis=1).astype(np.float64), 1024)
                      for i in insts])
        ref = reference_confidence(H)
        rows = c._activity_rows(tid)
        for k, inst in enumerate(insts):
            np.testing.assert_allclose(rows[inst][1], ref[k], atol=1.5e-4)
            np.testing.assert_array_equal(rows[inst][0] == 1, np.round(ref[k], 4) >= 0.5)


def test_unknown_versus_inactive(built):
    out, _ = built
    c = Corpus(out)
    mus = make_track_id("musdb", "Gamma Trio - Third Song")
    mdb = make_track_id("medleydb", "MusicDelta_80sRock")
    unknown = set(c.track(mus)["unknown_instruments"])
    assert {"piano", "electric_guitar", "acoustic_guitar", "guitar", "keys"} <= unknown
    assert not unknown & {"vocals", "lead_vocals", "drums", "bass", "electric_bass", "other"}
    a = c.read_activity(mus, ["vocals", "piano", "electric_guitar", "other"])
    assert not np.isnan(a[0]).any() and np.isnan(a[1]).all() and np.isnan(a[2]).all()
    assert not np.isnan(a[3]).any() and a[3].max() == 1  # `other` itself: computed
    # MedleyDB annotates every stem: no piano stem = inactive, not unknown
    assert c.track(mdb)["unknown_instruments"] == []
    b = c.read_activity(mdb, ["piano", "electric_guitar"])
    assert (b[0] == 0).all() and b[1].max() == 1


def test_synth_exact_note_labels(built):
    out, _ = built
    c = Corpus(out)
    tid = make_track_id("synth", "song-000")
    assert c.track(tid)["activity_method"] == "notes"
    a = c.read_activity(tid, ["piano", "bass"])
    t = np.arange(a.shape[1]) * 1024 / SR
    # piano notes (0.1, 0.6), (1.0, 1.01), (2.0, 2.9): a frame is active when its cell overlaps
    want = np.zeros_like(t, dtype=bool)
    for on, off in [(0.1, 0.6), (1.0, 1.01), (2.0, 2.9)]:
        want |= (np.maximum(on, t - 512 / SR) < np.minimum(off, t + 512 / SR))
    np.testing.assert_array_equal(a[0] == 1, want)
    assert (a[1] == 1).all()


def test_duplicate_song_across_corpora_in_one_split(built):
    out, _ = built
    c = Corpus(out)
    m = c.manifest
    split = {r["track_id"]: r["split"] for r in c.tracks.iter_rows(named=True)}
    groups = {frozenset(t["native_id"] for t in g["tracks"]): g for g in m["duplicates"]}
    g = groups[frozenset({"MusicDelta_80sRock", "Music Delta - 80s Rock"})]
    assert g["split"] == "train"  # MUSDB's train/ folder wins
    assert split[make_track_id("medleydb", "MusicDelta_80sRock")] == "train"
    g = groups[frozenset({"Actions_OneMinuteSmile", "Actions - One Minute Smile"})]
    assert g["split"] == "valid"  # one of MUSDB's 14 validation tracks
    assert split[make_track_id("mixing_secrets", "Actions_OneMinuteSmile")] == "valid"
    assert split[make_track_id("musdb", "Gamma Trio - Third Song")] == "test"


def test_info_reports_counts(built):
    out, _ = built
    info = corpus_info(out)
    assert info["tracks"] == 9
    assert info["instruments"]["drums"]["tracks"] == 8
    assert 0 < info["instruments"]["drums"]["active_fraction"] <= 1
    assert info["unknown_in_tracks"]["piano"] == 3
    total = sum(r["tracks"] for r in info["by_source_split"])
    assert total == 9


# --------------------------------------------------------------------------- incremental
def test_rebuild_is_cached_relabel_and_add_touch_little(built, sources, tmp_path):
    src_out, first = built
    out = tmp_path / "corpus"
    shutil.copytree(src_out, out)
    wavs = _mtimes(out, "audio/*/*/*.wav")
    again = B.run_build(_cfg(sources, out))
    assert again["stats"] == {"built": 0, "cached": 9, "relabelled": 0, "rejected": 0}
    assert again["manifest"]["corpus_version"] == first["manifest"]["corpus_version"]
    assert again["unchanged"] and _mtimes(out, "audio/*/*/*.wav") == wavs
    assert again["flow_run"] is False  # settled by the content cache: no Prefect server started

    # a label param: labels recomputed from the corpus' WAVs, no audio rewritten
    relabel = B.run_build(_cfg(sources, out, corpus={"labels": {"threshold": 0.8}}))
    assert relabel["stats"]["relabelled"] == 7 and relabel["stats"]["built"] == 0
    assert relabel["stats"]["cached"] == 2  # synth: exact notes do not depend on the threshold
    assert relabel["flow_run"] is True
    assert _mtimes(out, "audio/*/*/*.wav") == wavs
    assert relabel["manifest"]["corpus_version"] != first["manifest"]["corpus_version"]

    # a new track: built alone, only its activity shard rewritten
    parts = _mtimes(out, "activity/*.parquet")
    extra = dict(sources)
    new_root = tmp_path / "more_medleydb"
    shutil.copytree(sources["medleydb"], new_root)
    medleydb_track(new_root, "Zeta_NewSong", {"S01": ("piano", burst(2.0, [(0.2, 1.0)], 300.0))},
                   artist="Zeta", title="New Song")
    extra["medleydb"] = new_root
    added = B.run_build(_cfg(extra, out, corpus={"labels": {"threshold": 0.8}}))
    assert added["stats"]["built"] == 1 and added["stats"]["cached"] == 9
    from iass.pipelines.corpus_format import shard_of

    new_shard = shard_of(make_track_id("medleydb", "Zeta_NewSong"), 4)
    after = _mtimes(out, "activity/*.parquet")
    changed = {k for k in after if after[k] != parts.get(k)}
    assert changed == {f"activity/part-{new_shard}.parquet"}
    assert validate_corpus(out, progress=False) == []

    # another hop: relabelled (frames follow the new hop), still no audio rewritten
    hop512 = B.run_build(_cfg(extra, out, corpus={"hop": 512, "labels": {"threshold": 0.8}}))
    assert hop512["stats"]["relabelled"] == 10 and hop512["stats"]["built"] == 0
    c = Corpus(out)
    assert c.hop == 512
    for tid in c.track_ids():
        n = c.track(tid)["num_samples"] // 512 + 1
        assert c.track(tid)["num_frames"] == n
        assert c.read_activity(tid, ["drums"]).shape == (1, n)
    assert validate_corpus(out, progress=False) == []


def test_process_track_task_unit(sources, tmp_path):
    """The task body through task.fn, no flow: reject and cache behaviour of one track."""
    from iass.pipelines.sources.base import get_adapter

    cfg = _cfg(sources, tmp_path / "c")
    ref = next(iter(get_adapter("medleydb").discover(sources["medleydb"])))
    r1 = B.process_track.fn(ref, cfg)
    r2 = B.process_track.fn(ref, cfg)
    assert r1["status"] == "built" and r2["status"] == "cached"
    assert r1["input_digest"] == r2["input_digest"]
    # each step timed (reported, never in the record on disk); a cached track stops after read
    assert list(r1["step_s"]) == ["read", "harmonize", "label", "write"] and list(r2["step_s"]) == ["read"]
    assert all(t >= 0 for t in r1["step_s"].values())
    assert "step_s" not in json.loads(json.dumps(B.load_record(cfg.out, r1["track_id"])))
    assert B.cached_record(ref, cfg)["input_digest"] == r1["input_digest"]  # the flow's fast path
    os.utime(ref.location, ns=(1, 1))  # mtime only: the fast path steps aside, the task re-hashes
    assert B.cached_record(ref, cfg) is None
    assert B.process_track.fn(ref, cfg)["status"] == "cached"
    assert B.cached_record(ref, cfg) is not None  # stat cache refreshed
    (Path(ref.location).parent / "extra.txt").write_text("a new file beside the track")
    assert B.cached_record(ref, cfg) is None


def test_the_flow_runs_each_track_as_a_task(built, sources):
    """discover, one process-track run per track (named after it; its steps are plain calls,
    timed in the result), then split-guard -> publish."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter
    from prefect.client.schemas.sorting import FlowRunSort

    from iass.pipelines.sources.base import get_adapter

    with get_client(sync_client=True) as client:
        flows = client.read_flow_runs(sort=FlowRunSort.START_TIME_ASC, limit=1)  # the `built` fixture's run
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flows[0].id])),
                                     task_run_filter=TaskRunFilter(), limit=200)
    names = {t.name for t in runs}
    assert {f"discover-{s}" for s in sources} <= names
    for src, root in sources.items():
        for ref in get_adapter(src).discover(root):
            assert f"track-{src}-{ref.native_id}"[:100] in names
            assert f"write-{src}-{ref.native_id}"[:100] not in names  # no nested step runs
    assert {n.rsplit("-", 1)[0] for n in names} >= {"split-guard", "publish"}
    assert all(t.state.is_completed() for t in runs)


# ---------------------------------------------------------------------------- safety
def test_quarantine_and_strict(sources, tmp_path):
    bad = dict(sources)
    root = tmp_path / "ms"
    shutil.copytree(sources["mixing_secrets"], root)
    stem = root / "BetaGroup_SecondSong" / "BetaGroup_SecondSong_STEMS" / "BetaGroup_SecondSong_STEM_02.wav"
    stem.write_bytes(b"RIFF\x00\x00garbage")
    bad["mixing_secrets"] = root
    out = tmp_path / "corpus"
    res = B.run_build(_cfg(bad, out))
    assert res["stats"]["rejected"] == 1 and res["manifest"]["counts"]["tracks"] == 8
    rej = pq.read_table(out / "rejects.parquet").to_pylist()
    assert rej[0]["native_id"] == "BetaGroup_SecondSong"
    assert rej[0]["path"].endswith("BetaGroup_SecondSong_STEM_02.wav")
    assert rej[0]["reason"] and rej[0]["stage"] in ("validate", "load")
    assert str(tmp_path) not in json.dumps(rej)
    with pytest.raises(B.BuildError, match="strict.*BetaGroup_SecondSong"):
        B.run_build(_cfg(bad, tmp_path / "strict", strict=True))
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_lock_refuses_a_concurrent_build(sources, tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / B.LOCK_NAME).write_text(f"{holder.pid} {socket.gethostname()}")
        with pytest.raises(B.BuildError, match="another corpus build"):
            B.run_build(_cfg(sources, out))
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and is taken over
    res = B.run_build(_cfg(sources, out))
    assert res["manifest"]["counts"]["tracks"] == 9 and not (out / B.LOCK_NAME).exists()


def test_validate_catches_corruption(built, tmp_path):
    out = tmp_path / "corpus"
    shutil.copytree(built[0], out)
    wav = sorted(out.glob("audio/*/*/drums.wav"))[0]
    data = bytearray(wav.read_bytes())
    data[-8:] = b"\x7f" * 8
    wav.write_bytes(bytes(data))
    problems = validate_corpus(out, progress=False)
    assert any("sha256 mismatch" in p and wav.name in p for p in problems)
    rc = subprocess.run([sys.executable, "-m", "iass.cli", "corpus", "validate", str(out),
                         "--no-progress"], capture_output=True, text=True)
    assert rc.returncode != 0 and "INVALID" in rc.stderr
    # an edited activity shard breaks the version
    shutil.rmtree(out)
    shutil.copytree(built[0], out)
    part = sorted(out.glob("activity/part-*.parquet"))[0]
    t = pq.read_table(part)
    import pyarrow as pa
    import pyarrow.compute as pc

    t = t.set_column(3, "active", pc.invert(t.column("active")))
    pq.write_table(t.cast(ACTIVITY_SCHEMA), part)
    assert any("corpus_version" in p for p in validate_corpus(out, progress=False))
    assert pa  # keep import used


# ------------------------------------------------------------------------- slow: processes
def _cli_build(sources, out, *extra):
    args = [sys.executable, "-m", "iass.cli", "corpus", "build", "--out", str(out), "--no-progress"]
    for k, v in sources.items():
        args += ["--source", f"{k}={v}"]
    return args + list(extra)


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_version(tmp_path, sources):
    # more and longer tracks, so the kill lands mid-way
    big = dict(sources)
    root = tmp_path / "mdb"
    shutil.copytree(sources["medleydb"], root)
    for i in range(14):
        medleydb_track(root, f"Kill{i:02d}_Song", {
            "S01": ("drum set", burst(8.0, [(0.0, 8.0)], 100.0 + i, seed=i)),
            "S02": ("piano", burst(8.0, [(1.0, 5.0)], 300.0 + i, seed=100 + i))},
            artist=f"Kill {i}", title="Song")
    big["medleydb"] = root
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    B.run_build(_cfg(big, ref_out, workers=1))  # uninterrupted reference, in this process
    proc = subprocess.Popen(_cli_build(big, out, "--workers", "1", "--params", str(params)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    records = out / ".cache" / "tracks"
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and len(list(records.glob("*.json"))) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    done = subprocess.run(_cli_build(big, out, "--workers", "1", "--params", str(params)), env=env,
                          capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    v_ref = json.loads((ref_out / "manifest.json").read_text())["corpus_version"]
    v = json.loads((out / "manifest.json").read_text())["corpus_version"]
    assert v == v_ref
    assert "cached" in done.stdout and " 0 cached" not in done.stdout
    assert not list(out.rglob("*.tmp-*"))


def test_a_settled_build_without_prefect_equals_the_flow(built, sources, tmp_path):
    """Every track cached but the split params changed: the build without a flow run publishes
    exactly what the flow publishes (tables, version, manifest)."""
    src_out, first = built
    outs = {}
    for how in ("plain", "flow"):
        out = outs[how] = tmp_path / how
        shutil.copytree(src_out, out)
        B.run_build(_cfg(sources, out))  # refresh the stat cache (earlier tests touch sources)
        res = B.run_build(_cfg(sources, out, corpus={"splits": {"seed": 5, "song_level_artists": ["iass synth"]}}),
                          always_flow=(how == "flow"))
        assert res["flow_run"] is (how == "flow")
        assert res["stats"]["cached"] == 9 and res["stats"]["built"] == 0
        outs[how + "_manifest"] = res["manifest"]
    assert outs["plain_manifest"] == outs["flow_manifest"]
    assert outs["plain_manifest"]["corpus_version"] != first["manifest"]["corpus_version"]
    for table in ("tracks.parquet", "stems.parquet", "rejects.parquet"):
        assert (outs["plain"] / table).read_bytes() == (outs["flow"] / table).read_bytes()
    assert validate_corpus(outs["plain"], progress=False) == []


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["dask", "processes"])
def test_other_runners_give_the_same_corpus(built, sources, tmp_path, runner):
    out = tmp_path / runner
    res = B.run_build(_cfg(sources, out, runner=runner, workers=2))
    assert res["manifest"]["corpus_version"] == built[1]["manifest"]["corpus_version"]
    assert res["stats"]["built"] == 9
    # the tracks really ran in 2 worker processes, not in this one
    assert os.getpid() not in res["worker_pids"] and 1 <= len(res["worker_pids"]) <= 2
