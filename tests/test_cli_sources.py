"""``iass sources list|check``: on a MedleyDB tree built from ALL 330 real metadata yamls."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import source_fixtures as fx
from iass.cli import main


def test_sources_list(capsys):
    assert main(["sources", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"medleydb", "mixing_secrets", "musdb", "synth"}
    assert rows["mixing_secrets"]["labels"] > 400


def test_iass_help_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "iass.cli", "sources", "check", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "NAME=PATH" in out


@pytest.fixture(scope="module")
def medleydb_real_tree(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("medleydb_all") / "Audio"
    files = sorted((shared_data / "medleydb" / "metadata").glob("*_METADATA.yaml"))
    fx.build_from_real_metadata(files, root, seconds=0.02)
    return root


def test_check_all_real_medleydb_metadata_valid(medleydb_real_tree, capsys):
    rc = main(["sources", "check", f"medleydb={medleydb_real_tree}", "--json", "--no-progress"])
    captured = capsys.readouterr()
    (report,) = json.loads(captured.out)
    assert report["problems"] == []
    assert rc == 0
    assert (report["tracks"], report["valid"], report["failed"], report["stems"]) == (330, 330, 0, 2014)
    assert sum(report["instruments"].values()) == 2014
    assert report["labels"]["drum set"] > 100
    assert "330 valid, 0 failed" in captured.err


def test_check_reports_every_problem_and_fails(medleydb_real_tree, tmp_path, capsys):
    # a copy of two real tracks, one broken twice
    import shutil

    root = tmp_path / "Audio"
    for nid in ("MusicDelta_80sRock", "MusicDelta_Rock"):
        shutil.copytree(medleydb_real_tree / nid, root / nid)
    stem = root / "MusicDelta_Rock" / "MusicDelta_Rock_STEMS" / "MusicDelta_Rock_STEM_01.wav"
    stem.unlink()
    (root / "MusicDelta_Rock" / "MusicDelta_Rock_MIX.wav").write_bytes(b"junk")
    rc = main(["sources", "check", f"medleydb={root}", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"problem: MusicDelta_Rock: {stem}: missing file" in out
    assert "MusicDelta_Rock_MIX.wav: unreadable audio" in out
    assert "tracks: 2 (1 valid, 1 failed)" in out
    assert "checked 1 source(s): 2 tracks, 1 valid, 1 failed" in out


def test_check_usage_errors(tmp_path, capsys):
    assert main(["sources", "check", "nosuch=/x"]) == 2
    assert "unknown source 'nosuch'" in capsys.readouterr().err
    assert main(["sources", "check", f"medleydb={tmp_path}", "-o", "medleydb.nope=1"]) == 2
    assert "unknown option 'nope'" in capsys.readouterr().err
    assert main(["sources", "check", f"musdb={tmp_path}", "--no-progress"]) == 1   # empty root
    assert "no musdb track found" in capsys.readouterr().out


def test_check_mixing_secrets_real_metadata_with_metadata_dir(shared_data, tmp_path, capsys):
    """Metadata kept apart (-o mixing_secrets.metadata_dir=...): tracks = folders in the root."""
    meta_dir = shared_data / "mixing_secrets" / "metadata"
    picks = ["Actions_OneMinuteSmile", "Leaf_Summerghost", "AMContra_HeartPeripheral"]
    root = tmp_path / "ms"
    fx.build_from_real_metadata([meta_dir / f"{p}_METADATA.yaml" for p in picks], root, seconds=0.02)
    for p in picks:
        (root / p / f"{p}_METADATA.yaml").unlink()
    rc = main(["sources", "check", f"mixing_secrets={root}", "-o", f"mixing_secrets.metadata_dir={meta_dir}",
               "--json", "--no-progress"])
    (report,) = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["valid"] == 3 and report["problems"] == []
    assert report["mixture_sum_of_stems"] == 1     # Actions_OneMinuteSmile has an .mp3 mix


def test_check_defaults_to_params_sources(tmp_path, capsys):
    """No NAME=PATH: the `sources:` of a params file (relative paths from its folder; options)."""
    exp = fx.build_medleydb(tmp_path / "data" / "mdb", metadata_apart=True)
    params = tmp_path / "params.yaml"
    params.write_text(
        "sources:\n"
        f"  medleydb: {{path: data/mdb/Audio, metadata_dir: {exp.options['metadata_dir']}}}\n"
    )
    rc = main(["sources", "check", "--params", str(params), "--json", "--no-progress"])
    (report,) = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["tracks"] == 2 and report["valid"] == 2
    assert report["activation_conf"] == 1


def test_check_decode_finds_nan_and_records_repairs(tmp_path, capsys):
    import numpy as np

    from conftest import make_audio, write_wav

    exp = fx.build_medleydb(tmp_path / "mdb")
    stems = exp.root / "Alpha_Beta" / "Alpha_Beta_STEMS"
    bad = make_audio(0.2)
    bad[5, 1] = np.nan
    write_wav(stems / "Alpha_Beta_STEM_01.wav", data=bad, subtype="FLOAT")
    write_wav(exp.root / "MusicDelta_Rock" / "MusicDelta_Rock_STEMS" / "MusicDelta_Rock_STEM_02.wav",
              0.2, channels=1)
    # header checks alone cannot see NaN samples
    assert main(["sources", "check", f"medleydb={exp.root}", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sources", "check", f"medleydb={exp.root}", "--decode", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"problem: Alpha_Beta: {stems / 'Alpha_Beta_STEM_01.wav'}: 1 NaN/inf samples" in out
    assert "warning: MusicDelta_Rock: stem S02: mono, duplicated to stereo" in out


def test_check_all_real_mixing_secrets_metadata_valid(shared_data, tmp_path, capsys):
    """All 258 real Mixing Secrets yamls (230 stem labels, pre-summed stems, .mp3 mixes)."""
    root = tmp_path / "ms"
    written = fx.build_from_real_metadata(
        sorted((shared_data / "mixing_secrets" / "metadata").glob("*_METADATA.yaml")), root, seconds=0.02)
    primary = [s["instrument"][0] if isinstance(s["instrument"], list) else s["instrument"]
               for meta in written.values() for s in meta["stems"].values()]
    rc = main(["sources", "check", f"mixing_secrets={root}", "--json", "--no-progress"])
    (report,) = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and rc == 0
    assert (report["tracks"], report["valid"], report["stems"]) == (258, 258, 4529)
    assert report["mixture_sum_of_stems"] == 2          # the two .mp3 mixes
    assert report["labels"] == {lab: primary.count(lab) for lab in set(primary)}
