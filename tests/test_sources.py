"""Source adapters: ONE contract run over every adapter (mirdata's test_loaders style) on fixtures
written in each corpus's real layout, plus the bad inputs every adapter must refuse clearly."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import source_fixtures as fx
from conftest import write_wav
from iass.pipelines.sources.base import (
    SourceAdapter,
    SourceTrack,
    TrackAudio,
    TrackError,
    TrackRef,
    get_adapter,
    source_names,
)
from iass.pipelines.taxonomy import load_taxonomy

BUILDERS = {
    "medleydb": lambda root: fx.build_medleydb(root),
    "medleydb-metadata-dir": lambda root: fx.build_medleydb(root, metadata_apart=True),
    "mixing_secrets": fx.build_mixing_secrets,
    "musdb-hq": fx.build_musdb_hq,
    "musdb-stems": fx.build_musdb_stems,
    "synth": fx.build_synth,
}


def test_every_registered_source_has_a_contract_case():
    covered = {case.split("-")[0] for case in BUILDERS}
    missing = set(source_names()) - covered
    assert not missing, f"sources without a contract fixture: {missing}"


@pytest.mark.parametrize("case", sorted(BUILDERS))
def test_adapter_contract(case, tmp_path):
    exp: fx.Expected = BUILDERS[case](tmp_path / case)
    adapter = get_adapter(exp.source, **exp.options)
    assert isinstance(adapter, SourceAdapter) and adapter.name == exp.source
    assert (Path(__file__).parents[1] / "datasets" / "sources" / adapter.label_map).is_file()
    taxonomy = load_taxonomy()

    # discover: deterministic, sorted, exactly the tracks written (no stray folders)
    refs = list(adapter.discover(exp.root))
    assert refs == list(adapter.discover(exp.root))
    assert [r.native_id for r in refs] == sorted(exp.tracks)
    assert all(isinstance(r, TrackRef) and r.source == exp.source for r in refs)

    for ref in refs:
        want = exp.tracks[ref.native_id]
        track = adapter.read(ref)
        assert isinstance(track, SourceTrack)
        assert (track.source, track.native_id, track.split) == (exp.source, want.native_id, want.split)
        assert (track.artist, track.title) == (want.artist, want.title)
        assert {s.stem_id for s in track.stems} == set(want.stems)
        if exp.source in ("medleydb", "mixing_secrets"):   # numeric order, gaps allowed (S04, S10)
            ids = [s.stem_id for s in track.stems]
            assert ids == sorted(ids, key=lambda i: int(i[1:]))
        for stem in track.stems:
            w = want.stems[stem.stem_id]
            assert stem.labels == w.labels
            assert stem.extra["instrument"] == w.instrument and stem.extra["instrument"] in taxonomy
            assert stem.annotated == w.annotated
            assert Path(stem.path).resolve().is_relative_to(Path(exp.root).resolve())
        assert (track.mixture_path is not None) == want.has_mixture
        if not want.has_mixture:
            assert any("sum of the stems" in w for w in track.warnings)
        assert (track.activation_conf_path is not None) == want.activation_conf

        # validate: a clean fixture has no problem
        assert adapter.validate(track) == []

        # load: float32 stereo, one length, the samples that were written
        audio = adapter.load(track, 44100)
        assert isinstance(audio, TrackAudio) and audio.sample_rate == 44100
        lengths = {a.shape[0] for a in audio.stems.values()}
        if audio.mixture is not None:
            lengths.add(audio.mixture.shape[0])
        assert len(lengths) == 1
        for sid, w in want.stems.items():
            got = audio.stems[sid]
            assert got.dtype == np.float32 and got.shape[1] == 2
            ref_audio = w.audio if w.audio.shape[1] == 2 else np.repeat(w.audio, 2, axis=1)
            if w.lossy:   # AAC: same length within a frame, strongly correlated
                n = min(len(got), len(ref_audio))
                assert abs(len(got) - len(ref_audio)) <= 2048
                corr = np.corrcoef(got[:n].ravel(), ref_audio[:n].ravel())[0, 1]
                assert corr > 0.95, (sid, corr)
            else:         # lossless: equal up to 16-bit quantisation
                np.testing.assert_allclose(got[: len(ref_audio)], ref_audio, atol=1 / 32767 + 1e-6)
        if want.has_mixture:
            assert audio.mixture is not None and audio.mixture.shape[1] == 2
        else:
            assert audio.mixture is None


# ---------------------------------------------------------------- from REAL metadata yamls


@pytest.mark.parametrize("source", ["medleydb", "mixing_secrets"])
def test_real_metadata_tracks_read_validate_load(source, shared_data, tmp_path):
    """A few real metadata yamls (list-valued labels, pre-summed stems, .mp3 mixes) with audio."""
    meta_dir = shared_data / source / "metadata"
    picks = {
        "medleydb": ["MusicDelta_80sRock", "AClassicEducation_NightOwl", "Debussy_LenfantProdigue"],
        "mixing_secrets": ["Actions_OneMinuteSmile", "StreetNoise_Revelations", "cfx_Mathematician"],
    }[source]
    files = [meta_dir / f"{p}_METADATA.yaml" for p in picks]
    written = fx.build_from_real_metadata(files, tmp_path / source, seconds=0.05)
    adapter = get_adapter(source)
    refs = list(adapter.discover(tmp_path / source))
    assert [r.native_id for r in refs] == sorted(picks)
    for ref in refs:
        meta = written[ref.native_id]
        track = adapter.read(ref)
        assert track.artist == str(meta["artist"]) and track.title == str(meta["title"])
        assert {s.stem_id for s in track.stems} == set(meta["stems"])
        for stem in track.stems:
            raw = meta["stems"][stem.stem_id]["instrument"]
            assert list(stem.labels) == (raw if isinstance(raw, list) else [raw])
        assert track.metadata["has_bleed"] in (True, False)   # 'yes'/'no' strings -> bool
        mp3 = str(meta["mix_filename"]).endswith(".mp3")
        assert (track.mixture_path is None) == mp3
        assert adapter.validate(track) == [], ref.native_id
        audio = adapter.load(track)
        assert set(audio.stems) == set(meta["stems"])


def test_musdb_real_stempeg_track(tmp_path):
    """The real 6 s MUSDB18 track shipped in stempeg's package data, through the stems path."""
    import importlib.util

    spec = importlib.util.find_spec("stempeg")   # found, never imported (it needs ffmpeg on PATH)
    assert spec is not None and spec.submodule_search_locations
    src = Path(list(spec.submodule_search_locations)[0]) / "data" / "The Easton Ellises - Falcon 69.stem.mp4"
    assert src.is_file(), src
    root = tmp_path / "musdb"
    (root / "test").mkdir(parents=True)
    shutil.copyfile(src, root / "test" / src.name)
    adapter = get_adapter("musdb")
    (ref,) = list(adapter.discover(root))
    track = adapter.read(ref)
    assert (track.artist, track.title, track.split) == ("The Easton Ellises", "Falcon 69", "test")
    assert [(s.stem_id, s.stream) for s in track.stems] == [("drums", 1), ("bass", 2), ("other", 3), ("vocals", 4)]
    assert track.mixture_stream == 0
    assert adapter.validate(track) == []
    audio = adapter.load(track)
    n = audio.mixture.shape[0]
    assert abs(n / 44100 - 6.08) < 0.05
    assert all(a.shape == (n, 2) for a in audio.stems.values())
    # the stems of a real MUSDB track add up to its mixture (up to the mastering): independent check
    total = sum(audio.stems.values())
    corr = np.corrcoef(total.ravel(), audio.mixture.ravel())[0, 1]
    assert corr > 0.95
    # and each stream is a different signal (the stream map is not off by one)
    rms = [float(np.sqrt(np.mean(a ** 2))) for a in audio.stems.values()]
    assert len({round(r, 4) for r in rms}) == 4


# ---------------------------------------------------------------- bad inputs


def _one_track(tmp_path, stems=None, **kw):
    """A MedleyDB tree with one track; returns (adapter, root, track dir, metadata)."""
    root = tmp_path / "mdb"
    nid = "Bad_Track"
    meta = fx.medleydb_metadata(nid, stems or {
        "S01": {"filename": f"{nid}_STEM_01.wav", "instrument": "piano"},
        "S02": {"filename": f"{nid}_STEM_02.wav", "instrument": "drum set"},
    })
    fx.write_medleydb_track(root, nid, meta, **kw)
    return get_adapter("medleydb"), root, root / nid, meta


def _read(adapter, root):
    (ref,) = list(adapter.discover(root))
    return adapter.read(ref)


def test_missing_stem_file_is_reported_by_name(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path)
    gone = tdir / "Bad_Track_STEMS" / "Bad_Track_STEM_02.wav"
    gone.unlink()
    track = _read(adapter, root)
    assert adapter.validate(track) == [f"{gone}: missing file"]
    with pytest.raises(TrackError, match="missing file") as ei:
        adapter.load(track)
    assert ei.value.path == str(gone)


def test_unreadable_stem_is_reported(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path)
    bad = tdir / "Bad_Track_STEMS" / "Bad_Track_STEM_01.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage, not a wave file" * 3)
    problems = adapter.validate(_read(adapter, root))
    assert len(problems) == 1 and problems[0].startswith(f"{bad}: unreadable audio")


def test_sample_rate_mismatch_between_stems_is_rejected(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path)
    odd = tdir / "Bad_Track_STEMS" / "Bad_Track_STEM_02.wav"
    write_wav(odd, 0.2, 22050)
    track = _read(adapter, root)
    (problem,) = adapter.validate(track)
    assert problem == f"{odd}: sample rate 22050 Hz differs from the other files of the track (44100 Hz)"
    with pytest.raises(TrackError, match="sample rate 22050 Hz differs") as ei:
        adapter.load(track)
    assert ei.value.path == str(odd)


def test_whole_track_at_another_rate_is_resampled_and_recorded(tmp_path):
    adapter, root, _, _ = _one_track(tmp_path, sample_rate=48000, seconds=0.5)
    track = _read(adapter, root)
    assert adapter.validate(track) == []
    audio = adapter.load(track, 44100)
    assert {a.shape[0] for a in audio.stems.values()} == {22050}
    assert sum("resampled 48000 -> 44100" in w for w in audio.warnings) == 3   # 2 stems + mixture


def test_mono_stem_is_duplicated_to_stereo_and_recorded(tmp_path):
    adapter, root, _, _ = _one_track(tmp_path, mono=("S01",))
    track = _read(adapter, root)
    assert adapter.validate(track) == []
    audio = adapter.load(track)
    s01 = audio.stems["S01"]
    assert s01.shape[1] == 2 and np.array_equal(s01[:, 0], s01[:, 1])
    assert any(w.startswith("stem S01: mono, duplicated to stereo") for w in audio.warnings)


def test_nan_samples_are_rejected(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path)
    bad = tdir / "Bad_Track_STEMS" / "Bad_Track_STEM_01.wav"
    data = fx.make_audio(0.2)
    data[100, 0] = np.nan
    data[200, 1] = np.inf
    write_wav(bad, data=data, subtype="FLOAT")
    with pytest.raises(TrackError, match="2 NaN/inf samples") as ei:
        adapter.load(_read(adapter, root))
    assert ei.value.path == str(bad)


def test_short_tail_padded_long_mismatch_rejected(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path, seconds=3.0)
    stem = tdir / "Bad_Track_STEMS" / "Bad_Track_STEM_02.wav"
    write_wav(stem, 2.5)                        # 0.5 s short: padded, recorded
    track = _read(adapter, root)
    assert adapter.validate(track) == []
    audio = adapter.load(track)
    assert audio.stems["S02"].shape[0] == 3 * 44100
    assert not audio.stems["S02"][int(2.5 * 44100):].any()
    assert any("stem S02: tail of 22050 samples zero-padded" in w for w in audio.warnings)
    write_wav(stem, 1.0)                        # 2 s short: a different recording, rejected
    (problem,) = adapter.validate(track)
    assert problem.startswith(f"{stem}: 1.000 s, 2.000 s shorter")
    with pytest.raises(TrackError, match="shorter than the longest"):
        adapter.load(track)
    # the tolerance is an option
    lenient = get_adapter("medleydb", max_pad_seconds=2.5)
    assert lenient.validate(track) == []


@pytest.mark.parametrize("filename, match", [
    ("../../outside.wav", "escapes the track folder"),
    ("/etc/passwd", "absolute file name"),
])
def test_stem_filename_escaping_the_track_is_refused(tmp_path, filename, match):
    adapter, root, _, meta = _one_track(tmp_path)
    (tmp_path / "outside.wav").write_bytes(b"x")
    meta["stems"]["S01"]["filename"] = filename
    (root / "Bad_Track" / "Bad_Track_METADATA.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(TrackError, match=match):
        _read(adapter, root)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path)
    secret = write_wav(tmp_path / "elsewhere" / "secret.wav")
    assert secret is not None
    link = tdir / "Bad_Track_STEMS" / "Bad_Track_STEM_01.wav"
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere" / "secret.wav")
    with pytest.raises(TrackError, match="outside the source root"):
        _read(adapter, root)


@pytest.mark.parametrize("text, match", [
    ("- just\n- a list\n", "must be a YAML mapping, got list"),
    ("plain string\n", "must be a YAML mapping, got str"),
    ("stems: [\n", "not valid YAML"),
])
def test_metadata_that_is_not_a_mapping_is_refused(tmp_path, text, match):
    adapter, root, tdir, _ = _one_track(tmp_path)
    meta = tdir / "Bad_Track_METADATA.yaml"
    meta.write_text(text)
    with pytest.raises(TrackError, match=match) as ei:
        _read(adapter, root)
    assert ei.value.path == str(meta)


def test_python_object_yaml_tag_is_refused_and_never_run(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path)
    marker = tmp_path / "pwned"
    (tdir / "Bad_Track_METADATA.yaml").write_text(
        f"stems: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(TrackError, match="not valid YAML for the safe loader"):
        _read(adapter, root)
    assert not marker.exists()


def test_unmapped_label_names_label_track_and_yaml(tmp_path):
    adapter, root, _, _ = _one_track(tmp_path, stems={
        "S01": {"filename": "Bad_Track_STEM_01.wav", "instrument": ["piano", "kazoo orchestra"]},
    })
    with pytest.raises(TrackError) as ei:
        _read(adapter, root)
    msg = str(ei.value)
    assert "'kazoo orchestra'" in msg and "Bad_Track" in msg
    assert str(Path("datasets") / "sources" / "medleydb.yaml") in msg


def test_missing_metadata_and_missing_mix(tmp_path):
    adapter, root, tdir, _ = _one_track(tmp_path)
    mix = tdir / "Bad_Track_MIX.wav"
    mix.unlink()
    track = _read(adapter, root)
    assert track.mixture_path == mix                     # MedleyDB: the mix is required
    assert adapter.validate(track) == [f"{mix}: missing file"]
    (tdir / "Bad_Track_METADATA.yaml").unlink()
    with pytest.raises(TrackError, match="missing metadata file"):
        _read(adapter, root)


def test_activation_conf_looked_up_in_annotations_dir(tmp_path):
    root = tmp_path / "mdb"
    nid = "Some_Song"
    meta = fx.medleydb_metadata(nid, {"S01": {"filename": f"{nid}_STEM_01.wav", "instrument": "piano"},
                                      "S02": {"filename": f"{nid}_STEM_02.wav", "instrument": "cello"}})
    fx.write_medleydb_track(root, nid, meta)
    ann = tmp_path / "Annotations" / "Activation_Confidence"
    ann.mkdir(parents=True)
    (ann / f"{nid}_ACTIVATION_CONF.lab").write_text("time,S01\n0.0,0.5\n")
    plain = _read(get_adapter("medleydb"), root)
    assert plain.activation_conf_path is None
    adapter = get_adapter("medleydb", annotations_dir=str(tmp_path / "Annotations"))
    track = _read(adapter, root)
    assert track.activation_conf_path == ann / f"{nid}_ACTIVATION_CONF.lab"
    assert adapter.validate(track) == [f"{track.activation_conf_path}: no column for stems S02"]


def test_unknown_adapter_option_is_an_error():
    with pytest.raises(ValueError, match="unknown option 'metadata_dri'"):
        get_adapter("medleydb", metadata_dri="/x")


def test_musdb_prefers_hq_and_flat_root(tmp_path):
    exp = fx.build_musdb_hq(tmp_path / "hq")
    # the same song also as .stem.mp4 next to its HQ folder: HQ wins
    (exp.root / "train" / "A Band - A Song.stem.mp4").write_bytes(b"not read")
    adapter = get_adapter("musdb")
    refs = {r.native_id: r for r in adapter.discover(exp.root)}
    assert refs["A Band - A Song"].extra["format"] == "hq"
    only_stems = get_adapter("musdb", format="stems")
    assert [r.native_id for r in only_stems.discover(exp.root)] == ["A Band - A Song"]
    # a flat root (no train/test): split only from the validation list
    flat = tmp_path / "flat"
    (exp.root / "train").rename(flat)
    splits = {r.native_id: adapter.read(r).split for r in adapter.discover(flat)}
    assert splits == {"A Band - A Song": None, "Actions - One Minute Smile": "valid"}


def test_real_activation_conf_versions(shared_data, tmp_path):
    """The real MusicDelta_Rock lab (original/ and v2/): version order is an option; the lab's
    columns match the real metadata's stems."""
    meta = shared_data / "medleydb" / "metadata" / "MusicDelta_Rock_METADATA.yaml"
    fx.build_from_real_metadata([meta], tmp_path / "Audio", seconds=0.02)
    ann = shared_data / "medleydb" / "annotations_sample"
    adapter = get_adapter("medleydb", annotations_dir=str(ann))
    track = _read(adapter, tmp_path / "Audio")
    assert track.activation_conf_path == ann / "v2" / "MusicDelta_Rock_ACTIVATION_CONF.lab"
    assert adapter.validate(track) == []
    original = get_adapter("medleydb", annotations_dir=str(ann), annotations_versions=["original"])
    assert _read(original, tmp_path / "Audio").activation_conf_path == ann / "original" / "MusicDelta_Rock_ACTIVATION_CONF.lab"
