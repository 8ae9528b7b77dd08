"""`iass train` checks what it needs before the first step: one CorpusError / ConfigError line
naming what is missing (splits, a target nobody separates, activity labels, a chunk's length)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from corpus_fixtures import FixtureTrack, default_fixture_tracks, write_fixture_corpus
from iass.config import load_params
from iass.errors import CorpusError
from iass.pipelines.corpus_format import Corpus
from iass.training.config import resolve_train_params
from iass.training.train import Trainer

HOP = 256
TINY = ["model.iass.preset=tiny", f"stft.hop={HOP}", "stft.n_fft=512", "train.chunk_seconds=0.5",
        "train.batch_size=2", "train.steps_per_epoch=1", "train.workers=0", "train.stats_examples=2",
        "train.valid_chunks_per_track=1", "model.umx.hidden_size=16", "train.threads=1"]
S = 3.0
FULL = [(0.0, S)]


def musdb_like(name: str, split: str) -> FixtureTrack:
    return FixtureTrack(name, split, S, {"lead_vocals": [(0.5, S)], "drums": FULL,
                                         "electric_bass": FULL, "other": FULL},
                        source="musdb", unknown=["electric_guitar", "acoustic_guitar", "piano"])


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    def no_step(*_, **__):
        raise AssertionError("training started")

    monkeypatch.setattr(Trainer, "_start_or_resume", no_step)
    monkeypatch.setattr(Trainer, "_run_epoch", no_step)


def make(root, run_dir, targets, *extra, kind="iass"):
    params, config = resolve_train_params(load_params(None, TINY + list(extra)), targets=targets,
                                          device="cpu")
    return Trainer(root, run_dir, kind, params, config)


def corpus_of(tmp_path, name, tracks):
    root = tmp_path / name
    write_fixture_corpus(root, tracks, hop=HOP)
    return root


def test_a_corpus_without_training_tracks(tmp_path):
    root = corpus_of(tmp_path, "c", [t for t in default_fixture_tracks() if t.split != "train"])
    with pytest.raises(CorpusError, match="no tracks in split 'train'"):
        make(root, tmp_path / "run", ["vocals"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["train", "valid"])
def test_a_target_no_track_of_a_split_separates(tmp_path, split):
    """`other` is MUSDB's residual stem: MedleyDB-style (fully annotated) tracks leave it unknown,
    so a split without a MUSDB-like track cannot train or validate it."""
    tracks = [t for t in default_fixture_tracks() if t.source != "musdb"]
    other_split = "valid" if split == "train" else "train"
    tracks.append(musdb_like("musdb-only-here", other_split))
    root = corpus_of(tmp_path, "c", tracks)
    for kind in ("iass", "umx"):
        with pytest.raises(CorpusError, match=f"target 'other' is not separated by any of the "
                                              f"\\d+ tracks of split '{split}'.*MUSDB") as err:
            make(root, tmp_path / "run", ["vocals", "other"], kind=kind)
        assert "\n" not in str(err.value)
    # a target a split's tracks all leave unknown, not only the residual one
    tracks = [t for t in default_fixture_tracks() if t.split != split or t.source == "musdb"]
    tracks.append(musdb_like("musdb-b", split))
    if split == "valid":
        tracks = [t for t in tracks if not (t.split == "valid" and t.source != "musdb")]
    root = corpus_of(tmp_path, "d", tracks)
    with pytest.raises(CorpusError, match=f"target 'piano' is not separated .* split '{split}'"):
        make(root, tmp_path / "run", ["piano"])
    assert not (tmp_path / "run").exists()


def test_a_target_without_activity_labels(tmp_path):
    """The fixture writes MUSDB-like `other` stems with unknown (null) labels: separated audio,
    no activity to train its head on."""
    tracks = default_fixture_tracks() + [musdb_like("musdb-valid", "valid")]
    root = corpus_of(tmp_path, "c", tracks)
    with pytest.raises(CorpusError, match="target 'other' has no activity labels in split 'train'"):
        make(root, tmp_path / "run", ["vocals", "drums", "bass", "other"])


def test_missing_activity_shard(tmp_path):
    root = corpus_of(tmp_path, "c", default_fixture_tracks())
    c = Corpus(root)
    shard = c.track(c.track_ids(split="valid")[0])["shard"]
    part = c.tables.activity_part(shard)
    part.unlink()
    with pytest.raises(CorpusError, match=f"activity labels missing: .*{part.name}"):
        make(root, tmp_path / "run", ["vocals"])


def test_no_track_holds_a_chunk(tmp_path):
    root = corpus_of(tmp_path, "c", default_fixture_tracks())
    with pytest.raises(CorpusError, match="no training track is as long as one chunk "
                                          r"\(train.chunk_seconds = 5 s; the longest is 3.00 s\)"):
        make(root, tmp_path / "run", ["vocals"], "train.chunk_seconds=5")
    make(root, tmp_path / "run", ["vocals", "bass", "piano"])   # the fixture itself passes


def test_an_stft_shorter_than_the_hop(tmp_path):
    root = corpus_of(tmp_path, "c", default_fixture_tracks())
    from iass.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.iass.n_fft \(or its preset\) = 128 is shorter "
                                          "than the corpus hop 256"):
        make(root, tmp_path / "run", ["vocals"], "model.iass.n_fft=128")
    with pytest.raises(ConfigError, match=r"stft.n_fft \(or model.umx.n_fft\) = 128 is shorter than the corpus hop 256"):
        make(root, tmp_path / "run", ["vocals"], "stft.n_fft=128", kind="umx")


def test_the_cli_says_it_in_one_line(tmp_path):
    root = corpus_of(tmp_path, "c", default_fixture_tracks())
    args = ["--model", "umx", "--corpus", str(root), "--run-dir", str(tmp_path / "run"),
            "--device", "cpu", "--targets", "vocals", "other"]
    for o in TINY:
        args += ["-S", o]
    out = subprocess.run([sys.executable, "-m", "iass.cli", "train", *args], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "target 'other' is not separated" in lines[-1], out.stderr
    assert not (tmp_path / "run").exists()
