"""`iass separate` on the audio users have: a real MUSDB18 ``.stem.mp4`` (its mixture stream), an
M4A (AAC) and other formats only ffmpeg decodes, and one-line errors for every unreadable input."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from iass.cli import main
from iass.errors import AudioError
from iass.evaluation.audio_input import open_mixture
from iass.evaluation.separate import SeparationConfig, separate, separate_file
from iass.pipelines import audio as au
from iass.pipelines.corpus_format import num_frames
from iass.pipelines.sources.base import TrackError
from test_separate import ContextSeparator

SR = 44100


def _stempeg_track() -> Path:
    spec = importlib.util.find_spec("stempeg")   # located, not imported (needs ffprobe on PATH)
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "The Easton Ellises - Falcon 69.stem.mp4"


@pytest.fixture(scope="module")
def stem_mp4(tmp_path_factory) -> Path:
    """The real stempeg/MUSDB18 track (5 AAC streams: mixture, drums, bass, other, vocals), its
    last 3 seconds copied without re-encoding (the first seconds are silent) so the tests are fast."""
    out = tmp_path_factory.mktemp("stem") / "Falcon 69 (cut).stem.mp4"
    subprocess.run([au.ffmpeg_exe(), "-hide_banner", "-v", "error", "-nostdin", "-ss", "3",
                    "-i", str(_stempeg_track()), "-map", "0:a", "-c", "copy", "-t", "3", str(out)],
                   check=True)
    return out


def _ffmpeg_reference(path: Path, stream: int) -> np.ndarray:
    """Stream ``stream`` decoded by the ffmpeg binary straight to raw float32 (not our code)."""
    raw = subprocess.run([au.ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map",
                          f"0:a:{stream}", "-c:a", "pcm_f32le", "-f", "f32le", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 2)


def _snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((estimate - reference) ** 2)))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_stem_mp4_reads_the_mixture_stream(stem_mp4):
    """Stream 0 of the real .stem.mp4, sample for sample as ffmpeg decodes it; it is the mixture:
    the sum of the four stems within AAC tolerance, unlike any single stem."""
    assert len(au.probe_streams(stem_mp4)) == 5
    reference = _ffmpeg_reference(stem_mp4, 0)
    assert 2.5 * SR < len(reference) < 3.5 * SR
    with open_mixture(stem_mp4, SR) as mix:
        decoded = mix.read(0, mix.n_samples)
        assert mix.notes == ["decoded with ffmpeg (audio stream 0 of 5)"]
        np.testing.assert_array_equal(mix.read(1000, 5), reference[1000:1005])   # random access
    np.testing.assert_array_equal(decoded, reference)
    stems = [_ffmpeg_reference(stem_mp4, i) for i in range(1, 5)]
    n = min(len(decoded), *map(len, stems))
    assert _corr(decoded[:n], sum(s[:n] for s in stems)) > 0.99
    assert _snr_db(sum(s[:n] for s in stems), decoded[:n]) > 15
    assert max(_corr(decoded[:n], s[:n]) for s in stems) < 0.8


def test_separate_file_on_stem_mp4(stem_mp4, tmp_path):
    """The separation of the .stem.mp4 equals separating its decoded mixture in memory."""
    sep = ContextSeparator()
    cfg = SeparationConfig(weighting="hard", chunk_seconds=0.5)
    summary = separate_file(stem_mp4, sep, tmp_path / "out", cfg)
    mixture = _ffmpeg_reference(stem_mp4, 0)
    assert summary["samples"] == len(mixture)
    expected = separate(mixture, sep, cfg).estimates
    for k, target in enumerate(sep.targets):
        got, rate = sf.read(tmp_path / "out" / f"{target}.wav", dtype="float32", always_2d=True)
        assert rate == SR
        np.testing.assert_allclose(got, expected[k], atol=1e-6)
    import polars as pl

    assert pl.read_parquet(tmp_path / "out" / "activity.parquet").height == num_frames(len(mixture), sep.hop)


def _song(seconds: float = 2.5) -> np.ndarray:
    """Harmonic tones with a little noise and a slow tremolo (so AAC has something musical)."""
    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * SR)) / SR
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 660 * t + 1)
    right = 0.25 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 990 * t)
    x = np.stack([left, right], 1) + 0.05 * rng.standard_normal((len(t), 2))
    return (x * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t))[:, None]).astype(np.float32)


def _encode(wav: Path, out: Path, *codec: str) -> Path:
    subprocess.run([au.ffmpeg_exe(), "-hide_banner", "-v", "error", "-nostdin", "-y", "-i", str(wav),
                    *codec, "-b:a", "192k", str(out)], check=True)
    return out


def _aligned(decoded: np.ndarray, original: np.ndarray, max_lag: int = 2048):
    """Both signals over their overlap at the lag that correlates best (codec delay)."""
    n = min(len(decoded), len(original))

    def pair(lag):
        return decoded[max(lag, 0): n + min(lag, 0)], original[max(-lag, 0): n - max(lag, 0)]

    lag = max(range(-max_lag, max_lag + 1), key=lambda k: float(np.dot(*(p[:, 0] for p in pair(k)))))
    return lag, *pair(lag)


@pytest.mark.parametrize("suffix, codec", [("m4a", ("-c:a", "aac")), ("aac", ("-c:a", "aac")),
                                           ("ogg", ("-c:a", "libvorbis"))])
def test_ffmpeg_formats_match_the_wav_they_were_encoded_from(tmp_path, suffix, codec):
    """An M4A (AAC in MP4), a raw ADTS .aac (libsndfile refuses it: the ffmpeg fallback) and an
    OGG Vorbis decode to the WAV they were encoded from, within the codec's tolerance."""
    x = _song()
    wav = tmp_path / "song.wav"
    sf.write(wav, x, SR, subtype="FLOAT")
    path = _encode(wav, tmp_path / f"song.{suffix}", *codec)
    with open_mixture(path, SR) as mix:
        decoded = mix.read(0, mix.n_samples)
    assert abs(len(decoded) - len(x)) <= 2048
    lag, a, b = _aligned(decoded, x)
    assert abs(lag) <= 1024 and (lag == 0 or suffix == "aac")   # MP4 and OGG trim the encoder delay
    assert _corr(a, b) > 0.97 and _snr_db(a, b) > 10
    whole, sr = au.read_audio(path)                 # the corpus' whole-file read: the same samples
    assert sr == SR
    np.testing.assert_array_equal(whole, decoded)


def test_separate_file_on_m4a(tmp_path):
    x = _song()
    wav = tmp_path / "song.wav"
    sf.write(wav, x, SR, subtype="FLOAT")
    m4a = _encode(wav, tmp_path / "song.m4a", "-c:a", "aac")
    sep = ContextSeparator()
    summary = separate_file(m4a, sep, tmp_path / "out", SeparationConfig(chunk_seconds=0.5))
    assert summary["samples"] == len(x) and summary["notes"] == ["decoded with ffmpeg"]
    vocals, _ = sf.read(tmp_path / "out" / "vocals.wav", dtype="float32")
    with open_mixture(m4a, SR) as mix:
        expected = separate(mix.read(0, mix.n_samples), sep, SeparationConfig(chunk_seconds=0.5))
    np.testing.assert_allclose(vocals, expected.estimates[0], atol=1e-6)


# ------------------------------------------------------------------- one-line errors, via the CLI
def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    riff = tmp_path / "riff.wav"
    riff.write_bytes(b"RIFF\x00\x00garbage, not a wave file" * 3)
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    bad_mp4 = tmp_path / "bad.stem.mp4"
    bad_mp4.write_bytes(b"\x00" * 64)
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    return {
        "missing": (tmp_path / "missing.mp3", "missing file"),
        "garbage": (garbage, "unreadable audio"),
        "riff": (riff, "unreadable audio"),
        "zero-length": (empty, r"unreadable audio \(empty file, 0 bytes\)"),
        "text": (text, "unreadable audio"),
        "bad mp4": (bad_mp4, "unreadable audio"),
        "directory": (folder, "not a regular file"),
    }


def test_unreadable_inputs_are_one_line_audio_errors(tmp_path):
    for name, (path, reason) in _bad_inputs(tmp_path).items():
        with pytest.raises(AudioError, match=rf"^{path}: {reason}") as err:
            with open_mixture(path, SR):
                pass
        assert "\n" not in str(err.value), name
        # the same error class is the corpus build's TrackError (one reader for both)
        assert isinstance(err.value, TrackError)
        with pytest.raises(TrackError, match=reason):
            au.read_audio(path)


@pytest.fixture
def fake_run(monkeypatch):
    """`--run` loads this separator instead of a trained run (the CLI path is what is tested)."""
    import iass.evaluation.evaluate as ev

    monkeypatch.setattr(ev, "_load", lambda *args, **kwargs: ContextSeparator())


def test_cli_separate_errors_are_one_line(tmp_path, capsys, fake_run):
    for name, (path, reason) in _bad_inputs(tmp_path).items():
        rc = main(["separate", str(path), "--run", str(tmp_path), "--out", str(tmp_path / "out")])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert rc == 1, name
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), (name, captured.err)
        assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_cli_separates_stem_mp4_and_m4a(tmp_path, capsys, fake_run, stem_mp4):
    wav = tmp_path / "song.wav"
    sf.write(wav, _song(1.0), SR, subtype="FLOAT")
    m4a = _encode(wav, tmp_path / "song.m4a", "-c:a", "aac")
    for path in (stem_mp4, m4a):
        out = tmp_path / path.name.split(".")[0]
        assert main(["separate", str(path), "--run", str(tmp_path), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith(f"separated {path}") and "decoded with ffmpeg" in printed
        assert all((out / f"{t}.wav").is_file() for t in ("vocals", "bass"))
