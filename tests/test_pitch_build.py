"""Pitch labels through the corpus build: every synthesizer layout carries its exact notes, the
adapters read them, MedleyDB's f0 annotations become frame pitch labels, bad annotations are
quarantined, and a corpus without notes keeps its version."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus_fixtures import SR, burst, make_sources, medleydb_track
from iass.io import stable_hash
from iass.pipelines import build as B
from iass.pipelines import corpus_format as cf
from iass.pipelines.activity import intervals_to_frames
from iass.pipelines.build.plan import discover_tracks, finish, split_results
from iass.pipelines.corpus_check import corpus_info, validate_corpus
from iass.pipelines.notes import track_pitch
from iass.pipelines.sources.base import get_adapter
from iass.pipelines.synth import layouts
from iass.pipelines.synth.compose import compose_song
from iass.pipelines.synth.generate import synthesize
from iass.pipelines.taxonomy import load_taxonomy

PARAMS = {"corpus": {"hop": 1024, "num_shards": 4, "workers": 1, "runner": "threads",
                     "splits": {"seed": 0, "song_level_artists": ["iass synth"]}}}
SEED, SONGS, SECONDS = 5, 2, 3.0
ARRANGEMENT = "real"   # the synthesizer's default (iass synth --arrangement)
ADAPTER = {"medleydb": "medleydb", "mixing_secrets": "mixing_secrets", "musdb-hq": "musdb",
           "musdb-stems": "musdb", "native": "synth"}


def plain_build(sources: dict, out: Path) -> dict:
    """The build's own steps and publish (plan.py), run in this process without Prefect."""
    cfg = B.config_from_params(PARAMS, sources=sources, out=str(out), progress=False)
    refs, results = discover_tracks(cfg)
    results += [B.run_track(r, cfg) for r in refs]
    records, rejects = split_results(results)
    return finish(cfg, records, rejects, results, time.perf_counter())


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    for layout in layouts.LAYOUTS:
        synthesize(root / layout, layout, tracks=SONGS, duration=SECONDS, seed=SEED, workers=1,
                   progress=False, arrangement=ARRANGEMENT)
    return root


def _songs():
    songs = [compose_song(SEED, i, SECONDS, arrangement=ARRANGEMENT) for i in range(SONGS)]
    return {song.title: song for song in songs}


def _notes(song, instruments):
    return sorted((n.onset, n.offset, n.pitch) for i in instruments for n in song.part(i).notes)


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_every_layout_carries_the_exact_notes(trees, layout):
    """Read through the real adapter and the build's pitch step: per canonical instrument the
    song's own notes, to the last bit of the times; drums get no pitch labels."""
    adapter = get_adapter(ADAPTER[layout])
    songs = _songs()
    tax = load_taxonomy()
    for ref in adapter.discover(trees / layout):
        track = adapter.read(ref)
        assert track.pitch_sources, layout
        song = songs[track.title]
        stems_of = {}
        for s in track.stems:
            stems_of.setdefault(s.extra["instrument"], []).append(s.stem_id)
        rows, notes = track_pitch(track, "t", stems_of, int(SECONDS * SR), SR, tax)
        got = {}
        for inst, on, off, p in zip(*(notes.column(c).to_pylist()
                                      for c in ("instrument", "onset_s", "offset_s", "pitch"))):
            got.setdefault(inst, []).append((on, off, p))
        known = {r["instrument"] for r in rows}
        if layout.startswith("musdb"):
            of = layouts.musdb_notes_of({p.instrument: None for p in song.parts})
            want = {"vocals": _notes(song, of["vocals"]), "bass": _notes(song, of["bass"]),
                    "other": _notes(song, of["other"])}
        else:
            want = {p.instrument: _notes(song, [p.instrument]) for p in song.parts
                    if p.instrument != "drums"}
        assert known == set(want), layout
        assert "drums" not in known
        for inst, notes_ in want.items():
            assert sorted(got.get(inst, [])) == notes_, (layout, inst)
            assert next(r for r in rows if r["instrument"] == inst)["num_notes"] == len(notes_)


def test_medleydb_layout_notes_sit_beside_the_stems(trees):
    track_dir = next(p for p in (trees / "medleydb").iterdir() if p.is_dir())
    notes_dir = track_dir / f"{track_dir.name}_NOTES"
    stems = sorted(p.stem for p in (track_dir / f"{track_dir.name}_STEMS").glob("*.wav"))
    assert sorted(p.stem for p in notes_dir.glob("*.csv")) == stems
    first = (notes_dir / f"{stems[0]}.csv").read_text().splitlines()[0]
    assert first == "onset,offset,pitch,velocity"


def test_build_with_pitch_labels(trees, tmp_path):
    """The native and the MedleyDB copies of the same songs, built together: the same piano
    rolls; the version covers the notes; validate_corpus recomputes it."""
    out = tmp_path / "corpus"
    res = plain_build({"synth": trees / "native", "medleydb": trees / "medleydb"}, out)
    assert res["stats"]["rejected"] == 0
    c = cf.Corpus(out)
    assert c.has_pitch and res["manifest"]["counts"]["pitch_tracks"] == 2 * SONGS
    singing = sum("lead_vocals" in {p.instrument for p in song.parts} for song in _songs().values())
    assert corpus_info(out)["pitch"].get("lead_vocals", 0) == 2 * singing
    assert validate_corpus(out, progress=False) == []
    by_title: dict[str, dict[str, str]] = {}
    for tid in c.track_ids():
        by_title.setdefault(c.track(tid)["title"], {})[c.track(tid)["source"]] = tid
    song = next(iter(_songs().values()))
    pair = by_title[song.title]
    for target in ("vocals", "bass", "keys", "guitar"):
        a, b = c.read_pitch(pair["synth"], target), c.read_pitch(pair["medleydb"], target)
        assert a is not None and np.array_equal(a, b), target
    assert c.read_pitch(pair["synth"], "drums") is None
    # by hand: the lead vocals' roll is their notes, frame by frame (activity's frame rule)
    n = c.track(pair["synth"])["num_frames"]
    roll = c.read_pitch(pair["synth"], "lead_vocals")
    for p in {n_.pitch for n_ in song.part("lead_vocals").notes}:
        ivs = [(x.onset, x.offset) for x in song.part("lead_vocals").notes if x.pitch == p]
        np.testing.assert_array_equal(roll[:, p - cf.PITCH_MIN], intervals_to_frames(ivs, n, 1024, SR))
    # a table edited after the build is caught
    notes = next((out / c.manifest["snapshot"] / "notes").glob("part-*.parquet"))
    t = pq.read_table(notes)
    pq.write_table(t.slice(1), notes)
    assert any("corpus_version" in p for p in validate_corpus(out, progress=False))


def _pre_pitch_version(out: Path) -> str:
    """The corpus version as defined before pitch labels existed, from the published tables."""
    from iass.pipelines.corpus_check import activity_digest

    c = cf.Corpus(out)
    tables = c.tables
    activity = []
    for part in sorted(tables.activity_dir.glob("part-*.parquet")):
        t = pq.read_table(part)
        ids = t.column("track_id").to_pylist()
        for tid in dict.fromkeys(ids):
            idx = [i for i, x in enumerate(ids) if x == tid]
            activity.append((tid, activity_digest(t.take(idx))))
    rows = lambda p: pq.read_table(p).to_pylist()  # noqa: E731
    return stable_hash({
        "format_version": cf.FORMAT_VERSION, "params": c.manifest["params"],
        "tracks": sorted(rows(tables.tracks), key=lambda r: r["track_id"]),
        "stems": sorted(rows(tables.stems), key=lambda r: (r["track_id"], r["instrument"])),
        "activity": sorted(activity),
        "rejects": sorted(rows(tables.rejects), key=lambda r: (r["source"], r["native_id"], r["stage"])),
    })


def test_a_corpus_without_notes_keeps_its_version(tmp_path):
    sources = make_sources(tmp_path / "src", duration=1.5)
    out = tmp_path / "corpus"
    res = plain_build({k: sources[k] for k in ("medleydb", "musdb")}, out)
    c = cf.Corpus(out)
    assert not c.has_pitch and not (out / "pitch.parquet").exists() and not (out / "notes").exists()
    assert "pitch_tracks" not in res["manifest"]["counts"]
    assert corpus_info(out)["pitch"] == {}
    assert c.version == _pre_pitch_version(out)
    assert validate_corpus(out, progress=False) == []
    assert all(c.read_pitch(t, "vocals") is None for t in c.track_ids())


# ------------------------------------------------------------------ MedleyDB f0 annotations
F0_HOP = 256 / SR


def _medleydb_with_pitch(base: Path, rows: list[str] | None = None, stem_file: str = "S02") -> dict:
    """One MedleyDB track (drums S01, vocals S02, guitar S03) and an Annotations/Pitch folder with
    an f0 file for the vocals (``rows``: the file's lines; default a known melody)."""
    d = 2.0
    root = base / "medleydb"
    medleydb_track(root, "Band_Song", {
        "S01": ("drum set", burst(d, [(0.0, d)], 120.0, seed=1)),
        "S02": ("male singer", burst(d, [(0.2, 1.6)], 440.0, seed=2)),
        "S03": ("clean electric guitar", burst(d, [(0.5, 1.5)], 330.0, seed=3))},
        artist="Band", title="Song")
    ann = base / "Annotations" / "Pitch"
    ann.mkdir(parents=True)
    if rows is None:
        rows = melody_rows()
    (ann / f"Band_Song_STEM_{stem_file[1:]}.csv").write_text("\n".join(rows) + "\n")
    return {"medleydb": {"path": str(root), "annotations_dir": str(base / "Annotations")}}


def melody_rows() -> list[str]:
    """A4 (440 Hz) 0.2-0.6 s, an unvoiced gap (rows omitted, as MedleyDB does), A4 a little sharp
    (446 Hz, still MIDI 69) 0.8-1.0 s, 0 Hz rows, then E5 (659.26 Hz, MIDI 76) 1.2-1.5 s."""
    out = []
    for lo, hi, f in ((0.2, 0.6, 440.0), (0.8, 1.0, 446.0), (1.0, 1.2, 0.0), (1.2, 1.5, 659.26)):
        k0, k1 = int(np.ceil(lo / F0_HOP)), int(np.floor(hi / F0_HOP))
        out += [f"{k * F0_HOP:.9f},{f}" for k in range(k0, k1)]
    return out


def expected_f0_roll(rows: list[str], n_frames: int, hop: int) -> np.ndarray:
    """By brute force: frame t holds MIDI p when a voiced row of pitch p (its cell of one
    annotation hop centred on its time) overlaps the frame's cell."""
    roll = np.zeros((n_frames, cf.NUM_KEYS), bool)
    for line in rows:
        t, f = map(float, line.split(","))
        if f <= 0:
            continue
        p = int(round(69 + 12 * np.log2(f / 440.0)))
        a, b = (t - F0_HOP / 2) * SR, (t + F0_HOP / 2) * SR
        for k in range(n_frames):
            if a < k * hop + hop / 2 and b > k * hop - hop / 2:
                roll[k, p - cf.PITCH_MIN] = True
    return roll


def test_medleydb_f0_annotations_become_frame_pitch_labels(tmp_path):
    out = tmp_path / "corpus"
    rows = melody_rows()
    res = plain_build(_medleydb_with_pitch(tmp_path, rows), out)
    assert res["stats"]["rejected"] == 0
    c = cf.Corpus(out)
    tid = c.track_ids()[0]
    roll = c.read_pitch(tid, "vocals")
    assert roll is not None
    np.testing.assert_array_equal(roll, expected_f0_roll(rows, c.track(tid)["num_frames"], c.hop))
    assert set(np.flatnonzero(roll.any(0)) + cf.PITCH_MIN) == {69, 76}
    assert c.read_pitch(tid, "electric_guitar") is None      # no annotation: unknown, not silence
    assert c.read_pitch(tid, "drums") is None
    assert c.read_pitch(tid, "piano") is not None and not c.read_pitch(tid, "piano").any()
    pitch = pq.read_table(out / "pitch.parquet").to_pylist()
    assert [(r["instrument"], r["method"]) for r in pitch] == [("lead_vocals", "medleydb_f0")]
    assert pq.read_table(out / "notes" / f"part-{c.track(tid)['shard']}.parquet").column("velocity").null_count > 0
    assert validate_corpus(out, progress=False) == []


@pytest.mark.parametrize("case, rows, stem, reason", [
    ("past the audio", [f"{t:.6f},440.0" for t in (0.5, 1.0, 2.5)], "S02", "runs past the audio"),
    ("non-numeric f0", ["0.5,440.0", "0.51,abc"], "S02", "line 2: non-numeric f0 'abc'"),
    ("unknown stem", ["0.5,440.0"], "S07", "stem 'S07', not a stem of the track's metadata"),
])
def test_bad_pitch_annotations_are_quarantined(tmp_path, case, rows, stem, reason):
    out = tmp_path / "corpus"
    sources = _medleydb_with_pitch(tmp_path, rows, stem)
    # a second, good track keeps the build going
    medleydb_track(Path(sources["medleydb"]["path"]), "Other_Track",
                   {"S01": ("piano", burst(2.0, [(0.0, 1.0)], 262.0, seed=4))}, artist="O", title="T")
    res = plain_build(sources, out)
    assert res["stats"]["rejected"] == 1 and res["manifest"]["counts"]["tracks"] == 1, case
    rej = pq.read_table(out / "rejects.parquet").to_pylist()[0]
    assert rej["native_id"] == "Band_Song" and rej["stage"] == "label"
    assert reason in rej["reason"] and "\n" not in rej["reason"], rej
    # one line, no absolute path (the rejects are part of the corpus version)
    assert rej["path"] == f"medleydb.annotations_dir:Pitch/Band_Song_STEM_{stem[1:]}.csv"
    assert str(tmp_path) not in rej["reason"]


def test_records_of_before_pitch_labels_are_relabelled(trees, tmp_path):
    """A corpus built before pitch labels existed (records without pitch keys, label keys of
    then): the fast path does not vouch for its records, a rebuild relabels only (no audio
    work) and ends at the version of a fresh build."""
    import json

    from iass.pipelines.build.cache import CachePaths, cached_record, label_key

    out = tmp_path / "corpus"
    sources = {"synth": trees / "native"}
    first = plain_build(sources, out)["manifest"]["corpus_version"]
    cfg = B.config_from_params(PARAMS, sources=sources, out=str(out), progress=False)
    cache = CachePaths(out)
    for path in cache.tracks.glob("*.json"):
        rec = json.loads(path.read_text())
        for key in ("pitch", "notes_digest", "pitch_hint"):
            rec.pop(key)
        rec["label_key"] = label_key(rec["input_digest"], rec["method_hint"], cfg)
        path.write_text(json.dumps(rec))
        cache.notes_file(path.stem).unlink()
    refs, _ = discover_tracks(cfg)
    assert all(cached_record(r, cfg) is None for r in refs)
    wavs = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.wav")}
    res = plain_build(sources, out)
    assert res["stats"]["relabelled"] == SONGS and res["manifest"]["corpus_version"] == first
    assert {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.wav")} == wavs
    assert all(cached_record(r, cfg) is not None for r in refs)   # settled again


def test_f0_rows_to_notes_by_hand():
    """f0_notes on a hand-made series (hop 0.01 s): 440, 440, 445 Hz (all MIDI 69) are one note,
    a 0 Hz row ends it, 880 Hz (81) after it, then a skipped row (a gap) splits two 220 Hz (57)."""
    from iass.pipelines.notes import f0_notes

    t = np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07])
    f = np.array([440.0, 440.0, 445.0, 0.0, 880.0, 220.0, 220.0])
    got = [(round(a, 6), round(b, 6), p, v) for a, b, p, v in f0_notes(t, f)]
    assert got == [(0.0, 0.025, 69, None), (0.035, 0.045, 81, None), (0.045, 0.055, 57, None),
                   (0.065, 0.075, 57, None)]


def test_real_medleydb_metadata_and_pitch_file_format(tmp_path, shared_data):
    """MedleyDB's real metadata of MusicDelta_Punk with a pitch file in the release's format
    (``Annotations/Pitch/MusicDelta_Punk_STEM_04.csv``: ``time,f0`` rows, 9 decimals, voiced rows
    only, no header): the male singer (S04) gets frame pitch labels, the other stems unknown."""
    from source_fixtures import build_from_real_metadata

    root = tmp_path / "medleydb"
    build_from_real_metadata([shared_data / "medleydb/metadata/MusicDelta_Punk_METADATA.yaml"], root,
                             seconds=1.0)
    ann = tmp_path / "Annotations" / "Pitch"
    ann.mkdir(parents=True)
    rows = [f"{k * F0_HOP:.9f},{f:g}" for k, f in
            [(k, 433.753) for k in range(30, 60)] + [(k, 586.3) for k in range(80, 120)]]
    (ann / "MusicDelta_Punk_STEM_04.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "corpus"
    res = plain_build({"medleydb": {"path": str(root), "annotations_dir": str(tmp_path / "Annotations")}}, out)
    assert res["stats"]["rejected"] == 0
    c = cf.Corpus(out)
    tid = c.track_ids()[0]
    roll = c.read_pitch(tid, "vocals")
    np.testing.assert_array_equal(roll, expected_f0_roll(rows, c.track(tid)["num_frames"], c.hop))
    assert set(np.flatnonzero(roll.any(0)) + cf.PITCH_MIN) == {69, 74}   # 433.8 Hz -> A4, 586.3 Hz -> D5
    assert c.read_pitch(tid, "bass") is None and c.read_pitch(tid, "electric_guitar") is None


def test_musdb_sidecar_read_and_checked(tmp_path):
    """The MUSDB sidecar: notes of the vocals become the vocals' roll, drums none, and a row for a
    stem MUSDB does not have quarantines the track."""
    from corpus_fixtures import musdb_track

    d, root = 2.0, tmp_path / "musdb"
    stems = {k: burst(d, [(0.0, d)], f, seed=i) for i, (k, f) in
             enumerate((("vocals", 440.0), ("drums", 100.0), ("bass", 55.0), ("other", 330.0)))}
    good = musdb_track(root, "train", "A - Good", stems)
    (good / "notes.csv").write_text("stem,onset,offset,pitch,velocity\nvocals,0.5,1.0,69,90\n"
                                    "drums,0.0,0.1,36,100\nbass,1.0,1.5,33,80\n")
    bad = musdb_track(root, "train", "B - Bad", stems)
    (bad / "notes.csv").write_text("stem,onset,offset,pitch,velocity\npiano,0.5,1.0,60,90\n")
    out = tmp_path / "corpus"
    res = plain_build({"musdb": root}, out)
    assert res["stats"]["rejected"] == 1
    rej = pq.read_table(out / "rejects.parquet").to_pylist()[0]
    assert rej["native_id"] == "B - Bad" and "stem 'piano', not a stem" in rej["reason"]
    c = cf.Corpus(out)
    tid = c.track_ids()[0]
    n = c.track(tid)["num_frames"]
    roll = c.read_pitch(tid, "vocals")
    np.testing.assert_array_equal(roll[:, 69 - cf.PITCH_MIN], intervals_to_frames([(0.5, 1.0)], n, c.hop, SR))
    assert roll.sum() == roll[:, 69 - cf.PITCH_MIN].sum()
    assert c.read_pitch(tid, "drums") is None and c.read_pitch(tid, "piano") is None
    assert c.read_pitch(tid, "other") is not None and not c.read_pitch(tid, "other").any()
