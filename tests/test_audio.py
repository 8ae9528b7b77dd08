"""Audio reading shared by the adapters: formats, MP4 streams, resampling, path safety, yaml."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import make_audio
from iass.pipelines import audio as au
from iass.pipelines.sources.base import TrackError


@pytest.mark.parametrize("subtype, fmt, atol", [
    ("PCM_U8", "WAV", 1 / 127 + 1e-6),
    ("PCM_16", "WAV", 1 / 32767 + 1e-6),
    ("PCM_24", "WAV", 1e-6),
    ("PCM_32", "WAV", 1e-7),
    ("FLOAT", "WAV", 0.0),
    ("DOUBLE", "WAV", 1e-7),
    ("PCM_16", "FLAC", 1 / 32767 + 1e-6),
])
def test_read_formats_back(tmp_path, subtype, fmt, atol):
    data = make_audio(0.1, 44100, 2, seed=3)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(str(path), data, 44100, subtype=subtype, format=fmt)
    info = au.audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, len(data))
    got, sr = au.read_audio(path)
    assert sr == 44100 and got.dtype == np.float32 and got.shape == data.shape
    np.testing.assert_allclose(got, data, atol=atol)


def test_read_mp3(tmp_path):
    data = make_audio(0.5, 44100, 2, seed=1)
    path = tmp_path / "x.mp3"
    sf.write(str(path), data, 44100, format="MP3", subtype="MPEG_LAYER_III")
    got, sr = au.read_audio(path)
    assert sr == 44100 and got.shape[1] == 2
    n = min(len(got), len(data))
    # lossy and delayed by the codec: compare by best-lag correlation
    best = max(np.corrcoef(got[lag:n, 0], data[: n - lag, 0])[0, 1] for lag in range(0, 2000, 1))
    assert best > 0.9


def test_resample_matches_length_and_frequency():
    sr_in, sr_out = 48000, 44100
    t = np.arange(sr_in) / sr_in
    x = np.stack([np.sin(2 * np.pi * 1000 * t)] * 2, axis=1).astype(np.float32)
    y = au.resample(x, sr_in, sr_out)
    assert y.shape == (sr_out, 2) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y[:, 0]))
    assert abs(np.argmax(spectrum) * sr_out / len(y) - 1000) < 2


def test_to_stereo_and_channel_limit(tmp_path):
    mono = np.arange(10, dtype=np.float32)[:, None]
    st, was_mono = au.to_stereo(mono, "m.wav")
    assert was_mono and st.shape == (10, 2) and np.array_equal(st[:, 0], st[:, 1])
    with pytest.raises(TrackError, match="3 channels"):
        au.to_stereo(np.zeros((10, 3), np.float32), "three.wav")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(TrackError, match="missing file"):
        au.audio_info(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(TrackError, match="empty audio"):
        au.audio_info(empty)


def test_safe_join(tmp_path):
    root = tmp_path / "root"
    track = root / "T"
    track.mkdir(parents=True)
    assert au.safe_join(root, track, "a/b.wav") == track / "a" / "b.wav"
    for bad, match in [("../x.wav", r"'\.\.'"), ("a/../../x.wav", r"'\.\.'"), ("/abs.wav", "absolute"),
                       ("C:\\x.wav", "absolute"), ("", "invalid file name"), (" x.wav", "invalid file name")]:
        with pytest.raises(TrackError, match=match):
            au.safe_join(root, track, bad)
    (tmp_path / "out.wav").write_bytes(b"")
    (track / "link.wav").symlink_to(tmp_path / "out.wav")
    with pytest.raises(TrackError, match="outside the source root"):
        au.safe_join(root, track, "link.wav")
    # a symlink that stays inside the root is fine
    (track / "real.wav").write_bytes(b"")
    (track / "inside.wav").symlink_to(track / "real.wav")
    assert au.safe_join(root, track, "inside.wav") == track / "inside.wav"


def test_read_yaml_mapping(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("a: 1\nb: [x, y]\n")
    assert au.read_yaml_mapping(p) == {"a": 1, "b": ["x", "y"]}
    p.write_text("!!python/name:os.system\n")
    with pytest.raises(TrackError, match="safe loader"):
        au.read_yaml_mapping(p)
    p.write_text("")
    with pytest.raises(TrackError, match="got NoneType"):
        au.read_yaml_mapping(p)


def _stempeg_track() -> Path:
    spec = importlib.util.find_spec("stempeg")   # located, not imported (needs ffmpeg on PATH)
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "The Easton Ellises - Falcon 69.stem.mp4"


def test_probe_and_decode_mp4_streams():
    path = _stempeg_track()
    streams = au.probe_streams(path)
    assert len(streams) == 5       # the cover image stream is not audio
    assert all((s.sample_rate, s.channels) == (44100, 2) for s in streams)
    mix, sr = au.read_audio(path, 0)
    assert sr == 44100 and mix.shape[1] == 2
    assert abs(len(mix) - streams[0].frames) <= 2048      # container duration vs decoded
    with pytest.raises(TrackError, match="stream 7 is missing"):
        au.audio_info(path, 7)


def test_unreadable_mp4(tmp_path):
    bad = tmp_path / "bad.stem.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(TrackError):
        au.audio_info(bad, 0)


def test_write_wav_fixture_helper(tmp_path, wav_writer):
    data = wav_writer(tmp_path / "a" / "b.wav", seconds=0.05, channels=1, subtype="FLOAT")
    got, sr = au.read_audio(tmp_path / "a" / "b.wav")
    assert sr == 44100 and np.array_equal(got, data)


def test_mp4_stream_channel_layouts(tmp_path):
    """A mono and a stereo stream in one MP4: each is probed and decoded with its own layout."""
    path = tmp_path / "two.mp4"
    au_cmd = [au.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
              "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5",
              "-f", "lavfi", "-i", "sine=frequency=660:duration=0.5",
              "-map", "0:a", "-map", "1:a", "-ac:a:0", "1", "-ac:a:1", "2", "-c:a", "aac", str(path)]
    import subprocess

    subprocess.run(au_cmd, check=True)
    mono, stereo = au.probe_streams(path)
    assert (mono.channels, stereo.channels) == (1, 2)
    a0, _ = au.read_audio(path, 0)
    a1, _ = au.read_audio(path, 1)
    assert a0.shape[1] == 1 and a1.shape[1] == 2
    # the streams are what was encoded: 440 Hz and 660 Hz
    for audio, f0 in ((a0[:, 0], 440), (a1[:, 0], 660)):
        spectrum = np.abs(np.fft.rfft(audio))
        assert abs(np.argmax(spectrum) * 44100 / len(audio) - f0) < 5


def test_ffmpeg_fallback_for_formats_libsndfile_does_not_know(tmp_path):
    """A raw ADTS .aac (no MP4 suffix): libsndfile refuses it, ffmpeg reads header and samples."""
    import subprocess

    wav = tmp_path / "x.wav"
    sf.write(str(wav), make_audio(1.0, 44100, 2, seed=4), 44100)
    aac = tmp_path / "x.aac"
    subprocess.run([au.ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(wav), "-c:a", "aac", str(aac)],
                   check=True)
    info = au.audio_info(aac)
    assert (info.sample_rate, info.channels) == (44100, 2) and abs(info.duration - 1.0) < 0.1
    got, sr = au.read_audio(aac)
    assert sr == 44100 and got.shape[1] == 2 and abs(len(got) - 44100) <= 2048


def test_unreadable_file_errors_name_the_file(tmp_path):
    """Missing, a directory, zero bytes, garbage: one AudioFileError (a TrackError for the build,
    an AudioError for everyone) naming the file, from the header read and the full decode."""
    from iass.errors import AudioError

    (tmp_path / "dir.wav").mkdir()
    (tmp_path / "zero.flac").write_bytes(b"")
    (tmp_path / "junk.mp3").write_bytes(b"junk" * 100)
    cases = {"nope.wav": "missing file", "dir.wav": "not a regular file",
             "zero.flac": r"unreadable audio \(empty file, 0 bytes\)",
             "junk.mp3": r"unreadable audio \(.*; ffmpeg: .*\)$"}
    for name, reason in cases.items():
        for read in (au.audio_info, au.read_audio):
            with pytest.raises(au.AudioFileError, match=f"{name}: {reason}") as err:
                read(tmp_path / name)
            assert isinstance(err.value, AudioError) and isinstance(err.value, TrackError)
            assert "\n" not in str(err.value)
