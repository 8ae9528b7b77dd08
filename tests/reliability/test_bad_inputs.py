"""Bad inputs through the BUILD: one corpus built from source roots that hold every kind of bad
track beside good ones. Each bad track is quarantined with a one-line reason (rejects.parquet and
the console), each odd-but-valid one is accepted (and converted), nothing outside a source root is
ever read, and the good tracks come out whole."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from _reliability import build_config, cli_build_cmd, cli_env, read_whole_corpus, run_cli, write_params
from iass.pipelines import build as B
from iass.pipelines.corpus_check import validate_corpus
from iass.pipelines.corpus_format import Corpus, make_track_id

SR = 44100
LONG_ID = "Long_" + "x" * 195  # 200 bytes; <Id>_METADATA.yaml still fits NAME_MAX (255)
NON_UTF8 = os.fsdecode(b"Bad_\xff\xfeName")


def tone(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (110 + 40 * seed) * t) + noise * rng.standard_normal(n)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def medleydb(root: Path, nid: str, stems: dict, *, sr: int = SR, subtype: str = "PCM_16",
             meta_text: str | None = None, filenames: dict | None = None, mix: bool = True) -> Path:
    """A MedleyDB-layout track; ``stems`` = {'S01': (label, audio)}; returns its stem folder."""
    tdir = root / nid
    sdir = tdir / f"{nid}_STEMS"
    sdir.mkdir(parents=True, exist_ok=True)
    meta = {"artist": nid.split("_")[0], "title": nid, "mix_filename": f"{nid}_MIX.wav",
            "stem_dir": f"{nid}_STEMS", "stems": {}}
    total = None
    for sid, (label, audio) in stems.items():
        fname = (filenames or {}).get(sid, f"{nid}_STEM_{sid[1:]}.wav")
        meta["stems"][sid] = {"filename": fname, "instrument": label}
        if audio is not None:
            sf.write(str(sdir / fname), audio, sr, subtype=subtype)
            a2 = audio if audio.ndim == 2 and audio.shape[1] == 2 else np.repeat(audio.reshape(len(audio), -1)[:, :1], 2, 1)
            total = a2.copy() if total is None else total[: len(a2)] + a2[: len(total)]
    if mix and total is not None:
        sf.write(str(tdir / f"{nid}_MIX.wav"), np.clip(total, -1, 1), sr, subtype=subtype)
    (tdir / f"{nid}_METADATA.yaml").write_text(meta_text if meta_text is not None
                                               else yaml.safe_dump(meta))
    return sdir


# What each bad track must be rejected for (a regex of its reason)
BAD = {
    "Bad_Truncated": r"truncated WAV: the data chunk declares \d+ bytes, the file holds \d+",
    "Bad_Header": r"unreadable audio",
    "Bad_Empty": r"unreadable audio|empty",
    "Bad_NaN": r"NaN/inf samples",
    "Bad_Inf": r"NaN/inf samples",
    "Bad_TooShort": r"shorter than the longest file of the track",
    "Bad_Rates": r"sample rate 48000 Hz differs from the other files",
    "Bad_Missing": r"missing file",
    "Bad_NotMapping": r"metadata must be a YAML mapping, got list",
    "Bad_UnknownLabel": r"unmapped medleydb label 'kazoo-o-phone'",
    "Bad_DotDot": r"escapes the track folder \('\.\.'\)",
    "Bad_Absolute": r"absolute file name in the metadata",
    "Bad_PythonTag": r"not valid YAML for the safe loader",
    "Bad_Symlink": r"resolves outside the source root",
    NON_UTF8: r"file name is not valid UTF-8",
}
# accepted, with what the build records about them
GOOD = {
    "Good_Pcm16": None, "Bits_U8": None, "Bits_24": None, "Bits_32": None, "Float_32": None,
    "Float_64": None, "Rate_48k": r"resampled 48000 -> 44100 Hz", "Rate_22k": r"resampled 22050 -> 44100 Hz",
    "Mono_Stem": r"mono, duplicated to stereo", "Len_Diff": r"zero-padded", LONG_ID: None,
}


@pytest.fixture(scope="session")
def bad_build(tmp_path_factory, prefect_api):
    base = tmp_path_factory.mktemp("bad")
    outside = base / "outside"
    outside.mkdir()
    secret = outside / "secret.wav"
    sf.write(str(secret), tone(0.5, seed=9), SR, subtype="PCM_16")
    marker = base / "pwned"
    mdb = base / "medleydb"
    two = lambda sec=0.5, **kw: {"S01": ("drum set", tone(sec, seed=1, **kw)),  # noqa: E731
                                 "S02": ("piano", tone(sec, seed=2, **kw))}
    # accepted: every integer and float WAV type, other rates, mono, a short tail, a long name
    for nid, subtype in (("Good_Pcm16", "PCM_16"), ("Bits_U8", "PCM_U8"), ("Bits_24", "PCM_24"),
                         ("Bits_32", "PCM_32"), ("Float_32", "FLOAT"), ("Float_64", "DOUBLE")):
        medleydb(mdb, nid, two(), subtype=subtype)
    medleydb(mdb, "Rate_48k", two(sr=48000, noise=0), sr=48000)
    medleydb(mdb, "Rate_22k", two(sr=22050, noise=0), sr=22050)
    medleydb(mdb, "Mono_Stem", {"S01": ("drum set", tone(0.5, channels=1, seed=1)),
                                "S02": ("piano", tone(0.5, seed=2))})
    medleydb(mdb, "Len_Diff", {"S01": ("drum set", tone(0.5, seed=1)), "S02": ("piano", tone(0.3, seed=2))})
    medleydb(mdb, LONG_ID, two())
    # rejected: damaged audio
    sdir = medleydb(mdb, "Bad_Truncated", two())
    stem = sdir / "Bad_Truncated_STEM_01.wav"
    stem.write_bytes(stem.read_bytes()[: 44 + 1000])
    sdir = medleydb(mdb, "Bad_Header", two())
    data = bytearray((sdir / "Bad_Header_STEM_02.wav").read_bytes())
    data[12:36] = b"\xde\xad\xbe\xef" * 6  # the fmt chunk
    (sdir / "Bad_Header_STEM_02.wav").write_bytes(bytes(data))
    sdir = medleydb(mdb, "Bad_Empty", two())
    (sdir / "Bad_Empty_STEM_01.wav").write_bytes(b"")
    nan = tone(0.5, seed=1)
    nan[100:110, 0] = np.nan
    medleydb(mdb, "Bad_NaN", {"S01": ("drum set", nan), "S02": ("piano", tone(0.5, seed=2))}, subtype="FLOAT")
    inf = tone(0.5, seed=1)
    inf[5, 1] = np.inf
    medleydb(mdb, "Bad_Inf", {"S01": ("drum set", inf), "S02": ("piano", tone(0.5, seed=2))}, subtype="FLOAT")
    medleydb(mdb, "Bad_TooShort", {"S01": ("drum set", tone(2.0, seed=1)), "S02": ("piano", tone(0.4, seed=2))})
    sdir = medleydb(mdb, "Bad_Rates", two())
    sf.write(str(sdir / "Bad_Rates_STEM_02.wav"), tone(0.5, sr=48000, seed=2), 48000)
    medleydb(mdb, "Bad_Missing", {"S01": ("drum set", tone(0.5, seed=1)), "S02": ("piano", None)})
    # rejected: bad metadata
    medleydb(mdb, "Bad_NotMapping", two(), meta_text="- drums\n- piano\n")
    medleydb(mdb, "Bad_UnknownLabel", {"S01": ("drum set", tone(0.5, seed=1)),
                                       "S02": ("kazoo-o-phone", tone(0.5, seed=2))})
    medleydb(mdb, "Bad_PythonTag", two(),
             meta_text=f"stems: !!python/object/apply:os.system ['touch {marker}']\n")
    # rejected: names that point outside the source root (the target exists and is a valid WAV)
    medleydb(mdb, "Bad_DotDot", two(), filenames={"S02": "../../../outside/secret.wav"})
    medleydb(mdb, "Bad_Absolute", two(), filenames={"S02": str(secret)})
    sdir = medleydb(mdb, "Bad_Symlink", two())
    (sdir / "Bad_Symlink_STEM_02.wav").unlink()
    (sdir / "Bad_Symlink_STEM_02.wav").symlink_to(secret)
    # rejected: a file name the tables cannot hold
    medleydb(mdb, "Bad_Utf8Later", two())  # libsndfile cannot write to such a name: rename it
    os.rename(mdb / "Bad_Utf8Later" / "Bad_Utf8Later_METADATA.yaml",
              mdb / "Bad_Utf8Later" / f"{NON_UTF8}_METADATA.yaml")
    os.rename(mdb / "Bad_Utf8Later", mdb / NON_UTF8)
    # duplicate track ids: one MUSDB song in both split folders (plus one good MUSDB song)
    mus = base / "musdb"
    for folder, name in (("train", "Dup Band - Same Song"), ("test", "Dup Band - Same Song"),
                         ("train", "Fine Band - Good Song")):
        tdir = mus / folder / name
        tdir.mkdir(parents=True)
        parts = {k: tone(0.5, seed=i) for i, k in enumerate(("vocals", "drums", "bass", "other"))}
        for k, a in parts.items():
            sf.write(str(tdir / f"{k}.wav"), a, SR, subtype="PCM_16")
        sf.write(str(tdir / "mixture.wav"), np.clip(sum(parts.values()), -1, 1), SR, subtype="PCM_16")
    # nothing may read the file outside the root: its atime (relatime: atime < mtime) would move
    now = time.time()
    os.utime(secret, (1_000_000, now))
    out = base / "corpus"
    params = write_params(base / "params.yaml")
    proc = run_cli(cli_build_cmd({"medleydb": mdb, "musdb": mus}, out, params), cli_env(prefect_api))
    return {"out": out, "proc": proc, "secret": secret, "marker": marker, "mdb": mdb, "base": base}


def test_the_build_goes_on_and_the_good_tracks_are_whole(bad_build):
    proc, out = bad_build["proc"], bad_build["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert validate_corpus(out, progress=False) == []
    seen = read_whole_corpus(out)
    want = {make_track_id("medleydb", n) for n in GOOD} | {make_track_id("musdb", "Fine Band - Good Song")}
    assert seen["tracks"] == want
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["rejects"] == len(BAD) + 2  # + both copies of the duplicate
    assert f"{len(want)} tracks" in proc.stdout and f"{len(BAD) + 2} rejected" in proc.stdout


@pytest.mark.parametrize("nid", sorted(BAD, key=repr))
def test_each_bad_track_is_quarantined_with_a_clear_one_line_reason(bad_build, nid):
    out, base = bad_build["out"], bad_build["base"]
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    shown = nid.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    mine = [r for r in rejects if r["source"] == "medleydb" and r["native_id"] == shown]
    assert len(mine) == 1, rejects
    r = mine[0]
    assert re.search(BAD[nid], r["reason"]), r
    assert "\n" not in r["reason"] and len(r["reason"]) < 400
    if nid == "Bad_Absolute":  # the path IS the metadata's text: reported as written
        assert r["path"] == str(bad_build["secret"])
    else:  # source roots are scrubbed: the version is portable
        assert str(base) not in json.dumps(r)
    # ... and on the console, one line each
    line = f"rejected medleydb:{shown} ({r['stage']}) {r['path']}: {r['reason']}"
    assert line in bad_build["proc"].stderr.splitlines()


def test_duplicate_track_ids_are_both_quarantined(bad_build):
    rejects = pq.read_table(bad_build["out"] / "rejects.parquet").to_pylist()
    dup = [r for r in rejects if r["native_id"] == "Dup Band - Same Song"]
    assert len(dup) == 2 and {r["path"].split("/")[0] for r in dup} == {"musdb:train", "musdb:test"}
    assert all("duplicate track id" in r["reason"] and r["stage"] == "discover" for r in dup)


def test_nothing_outside_the_source_root_is_read_or_run(bad_build):
    secret = bad_build["secret"]
    assert secret.stat().st_atime == 1_000_000, "a file outside the source root was read"
    assert not bad_build["marker"].exists(), "the yaml's python tag was executed"


def test_odd_but_valid_inputs_are_converted_and_recorded(bad_build):
    c = Corpus(bad_build["out"])
    mdb = bad_build["mdb"]
    for nid, warning in GOOD.items():
        tid = make_track_id("medleydb", nid)
        row = c.track(tid)
        assert row["sample_rate"] == SR and set(row["instruments"]) == {"drums", "piano"}
        assert row["num_samples"] == int(round(0.5 * SR)), nid
        if warning:
            assert any(re.search(warning, w) for w in row["warnings"]), (nid, row["warnings"])
        if nid in ("Good_Pcm16", "Bits_U8", "Bits_24", "Bits_32", "Float_32", "Float_64"):
            # integer and float WAVs are read at their exact values (float32), not rescaled twice
            src, _ = sf.read(str(mdb / nid / f"{nid}_STEMS" / f"{nid}_STEM_02.wav"), dtype="float32")
            np.testing.assert_array_equal(c.read_instrument(tid, "piano"), src)
    mono = c.read_instrument(make_track_id("medleydb", "Mono_Stem"), "drums")
    np.testing.assert_array_equal(mono[:, 0], mono[:, 1])
    # resampled: the same tone at 44.1 kHz (soxr HQ), compared away from the edges
    ref = tone(0.5, seed=2, noise=0)
    sl = slice(2000, -2000)
    for nid in ("Rate_48k", "Rate_22k"):
        res = c.read_instrument(make_track_id("medleydb", nid), "piano")
        assert np.max(np.abs(res[sl] - ref[sl])) < 2e-3, nid  # 16-bit quantisation + soxr
    pad = c.read_instrument(make_track_id("medleydb", "Len_Diff"), "piano")
    assert not pad[int(0.3 * SR):].any() and pad[: int(0.3 * SR)].any()


def test_the_rejected_tracks_left_no_files_and_a_rebuild_rejects_them_again(bad_build, prefect_api):
    out = bad_build["out"]
    dirs = {p.name.rsplit(".", 1)[0] for p in (out / "audio").glob("*/*")}  # <track_id>.<key>
    assert dirs == {make_track_id("medleydb", n) for n in GOOD} | {make_track_id("musdb", "Fine Band - Good Song")}
    before = json.loads((out / "manifest.json").read_text())
    cfg = build_config({"medleydb": bad_build["mdb"], "musdb": bad_build["base"] / "musdb"}, out)
    again = B.run_build(cfg)
    assert again["manifest"]["corpus_version"] == before["corpus_version"]
    assert again["stats"]["built"] == 0 and again["unchanged"]
