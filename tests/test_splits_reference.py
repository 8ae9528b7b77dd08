"""The Fig. 4 MUSDB guard: a MedleyDB + Mixing Secrets corpus without MUSDB audio keeps every song
that is also in MUSDB in the split MUSDB gives it (``corpus.splits.declared: {musdb:
experiments/musdb18_splits.yaml}`` -> reference songs of :func:`assign_splits`)."""
from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from iass import REPO_ROOT
from iass.pipelines import corpus_format as cf
from iass.pipelines.build.config import BuildError, config_from_params
from iass.pipelines.splits import SplitTrack, assign_splits, reference_tracks

MUSDB_SPLITS = REPO_ROOT / "experiments" / "musdb18_splits.yaml"
SHARED = REPO_ROOT.parent / "shared" / "data"


def _musdb() -> dict[str, str]:
    return yaml.safe_load(MUSDB_SPLITS.read_text())


def _track(source: str, native_id: str, artist: str = "", title: str = "", declared=None):
    return SplitTrack(track_id=cf.make_track_id(source, native_id), source=source,
                      native_id=native_id, artist=artist, title=title, declared=declared)


def test_the_official_list_is_musdb18s_split():
    musdb = _musdb()
    assert collections.Counter(musdb.values()) == {"train": 86, "valid": 14, "test": 50}
    official_valid = yaml.safe_load((REPO_ROOT / "datasets/sources/musdb.yaml").read_text())[
        "validation_tracks"]
    assert sorted(k for k, v in musdb.items() if v == "valid") == sorted(official_valid)


def _fig4_tracks() -> list[SplitTrack]:
    return [
        _track("medleydb", "AlexanderRoss_GoodbyeBolero", "Alexander Ross", "Goodbye Bolero"),  # valid
        _track("medleydb", "MusicDelta_80sRock", "Music Delta Multitracks", "80s Rock"),       # train
        _track("mixing_secrets", "Actions_OneMinuteSmile", "Actions"),                          # valid
        _track("mixing_secrets", "AlJames_SchoolboyFacination", "Al James"),                    # test
        _track("mixing_secrets", "BKS_SomethingElse", "BKS"),         # not in MUSDB; BKS's are test
    ] + [_track("medleydb", f"Band{i}_Song{i}", f"Band{i}", f"Song{i}") for i in range(12)]


def test_songs_in_musdb_take_musdb_split_without_musdb_audio():
    tracks = _fig4_tracks()
    refs = reference_tracks({"musdb": _musdb()}, [(t.source, t.native_id) for t in tracks])
    assert len(refs) == 150
    res = assign_splits(tracks, use_fingerprint=False, reference=refs)
    by_id = {t.native_id: res.split[t.track_id] for t in tracks}
    assert by_id["AlexanderRoss_GoodbyeBolero"] == "valid"
    assert by_id["Actions_OneMinuteSmile"] == "valid"
    assert by_id["MusicDelta_80sRock"] == "train"
    assert by_id["AlJames_SchoolboyFacination"] == "test"
    assert by_id["BKS_SomethingElse"] == "test"              # the artist follows its MUSDB songs
    # only the build's tracks get a split; the references are named in the duplicate groups
    assert set(res.split) == {t.track_id for t in tracks} == set(res.song_key)
    moved = {e["native_id"] for g in res.duplicates for e in g["tracks"] if not e.get("reference")}
    assert moved == {"AlexanderRoss_GoodbyeBolero", "MusicDelta_80sRock", "Actions_OneMinuteSmile",
                     "AlJames_SchoolboyFacination"}
    for g in res.duplicates:
        (ref,) = [e for e in g["tracks"] if e.get("reference")]
        assert ref["source"] == "musdb" and g["split"] == _musdb()[ref["native_id"]]
    assert res.reasons[cf.make_track_id("mixing_secrets", "Actions_OneMinuteSmile")] == \
        "same song as musdb:Actions - One Minute Smile"


def test_references_split_as_if_musdb_were_built():
    tracks = _fig4_tracks()
    musdb = _musdb()
    with_refs = assign_splits(tracks, use_fingerprint=False,
                              reference=reference_tracks({"musdb": musdb}, []))
    built = assign_splits(tracks + [_track("musdb", n, declared=s) for n, s in musdb.items()],
                          use_fingerprint=False)
    assert with_refs.split == {t: s for t, s in built.split.items() if t in with_refs.split}


def test_a_track_in_the_build_is_not_its_own_reference():
    musdb = {"Gamma Trio - Third Song": "test"}
    track = _track("musdb", "Gamma Trio - Third Song", declared="test")
    assert reference_tracks({"musdb": musdb}, [("musdb", track.native_id)]) == []
    res = assign_splits([track], reference=[_track("musdb", track.native_id, declared="test")])
    assert res.split == {track.track_id: "test"} and res.duplicates == []


def test_declared_list_from_a_file_relative_to_the_params(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "m.yaml").write_text("'A - B': valid\n")
    params = {"corpus": {"splits": {"declared": {"musdb": "lists/m.yaml",
                                                 "medleydb": {"X_Y": "test"}}}}}
    cfg = config_from_params(params, sources={"synth": str(tmp_path)}, out=str(tmp_path / "c"), base_dir=tmp_path)
    assert cfg.split_params["declared"] == {"musdb": {"A - B": "valid"}, "medleydb": {"X_Y": "test"}}
    # the manifest records the list, not the path: the corpus version follows the content
    assert cfg.public_params()["splits"]["declared"]["musdb"] == {"A - B": "valid"}
    for bad, message in (("nowhere.yaml", "cannot read"), ("lists", "cannot read")):
        params["corpus"]["splits"]["declared"]["musdb"] = bad
        with pytest.raises(BuildError, match=rf"corpus\.splits\.declared\.musdb: {message}"):
            config_from_params(params, sources={"synth": str(tmp_path)}, out=str(tmp_path / "c"), base_dir=tmp_path)
    (tmp_path / "lists" / "bad.yaml").write_text("- a list\n")
    params["corpus"]["splits"]["declared"]["musdb"] = "lists/bad.yaml"
    with pytest.raises(BuildError, match=r"corpus\.splits\.declared\.musdb .*bad\.yaml.*mapping"):
        config_from_params(params, sources={"synth": str(tmp_path)}, out=str(tmp_path / "c"), base_dir=tmp_path)


@pytest.mark.shared_data
def test_real_metadata_every_musdb_song_keeps_its_split():
    """MedleyDB's and Mixing Secrets' real track lists against MUSDB's: the 46 MedleyDB songs of
    MUSDB (and those of Mixing Secrets) land in MUSDB's split."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent (../shared/data not mounted)")
    tracks = []
    for source in ("medleydb", "mixing_secrets"):
        for f in sorted((SHARED / source / "metadata").glob("*_METADATA.yaml")):
            meta = yaml.safe_load(f.read_text()) or {}
            tracks.append(_track(source, f.name[: -len("_METADATA.yaml")],
                                 str(meta.get("artist") or ""), str(meta.get("title") or "")))
    musdb = _musdb()
    res = assign_splits(tracks, use_fingerprint=False,
                        reference=reference_tracks({"musdb": musdb}, []))
    per_source = collections.Counter()
    for g in res.duplicates:
        (ref,) = [e for e in g["tracks"] if e.get("reference")]
        for e in g["tracks"]:
            if not e.get("reference"):
                assert res.split[e["track_id"]] == musdb[ref["native_id"]], (e, ref)
                per_source[e["source"]] += 1
    assert per_source["medleydb"] == 46
    assert per_source["mixing_secrets"] >= 60


@pytest.mark.slow
def test_a_build_without_musdb_keeps_musdb_songs_in_musdb_split(tmp_path, monkeypatch):
    """The real build (Prefect flow or its no-work fast path, whichever runs) applies the guard."""
    from corpus_fixtures import make_sources
    from iass.cli import main
    from iass.pipelines import build as B
    from prefect.testing.utilities import prefect_test_harness

    trees = make_sources(tmp_path / "src")
    params = tmp_path / "exp" / "params.yaml"
    params.parent.mkdir()
    params.write_text(yaml.safe_dump({
        "sources": {"medleydb": str(trees["medleydb"]), "mixing_secrets": str(trees["mixing_secrets"])},
        "corpus": {"hop": 1024, "num_shards": 4, "workers": 2, "runner": "threads",
                   "splits": {"declared": {"musdb": str(os.path.relpath(MUSDB_SPLITS, params.parent))}}},
    }))
    for key, value in B.prefect_defaults().items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    out = tmp_path / "corpus"
    with prefect_test_harness(server_startup_timeout=180):   # a loaded 2-core machine starts it slowly
        assert main(["corpus", "build", "--params", str(params), "--out", str(out), "--no-progress"]) == 0
    tracks = pq.read_table(out / "tracks.parquet").to_pandas().set_index("native_id")
    assert tracks.loc["MusicDelta_80sRock", "split"] == "train"          # MUSDB train
    assert tracks.loc["Actions_OneMinuteSmile", "split"] == "valid"      # MUSDB's validation list
    manifest = json.loads((out / "manifest.json").read_text())
    refs = {e["native_id"] for g in manifest["duplicates"] for e in g["tracks"] if e.get("reference")}
    assert refs == {"Music Delta - 80s Rock", "Actions - One Minute Smile"}
