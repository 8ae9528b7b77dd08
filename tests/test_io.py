"""The one WAV writer (iass.io.write_wav): exact samples back through libsndfile, the digest it
computes while writing, deterministic bytes, and refusals."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from iass.io import file_digest, wav_bytes, write_wav


@pytest.mark.parametrize("channels", [1, 2])
def test_float_wav_round_trip_and_digest(tmp_path, channels):
    rng = np.random.default_rng(channels)
    audio = rng.normal(size=(4410, channels)).astype(np.float32)
    digest, size = write_wav(tmp_path / "a.wav", audio, 44100, "FLOAT", digest="sha256")
    back, sr = sf.read(tmp_path / "a.wav", dtype="float32", always_2d=True)
    assert sr == 44100 and np.array_equal(back, audio)
    info = sf.info(str(tmp_path / "a.wav"))
    assert info.subtype == "FLOAT" and info.frames == 4410
    assert digest == file_digest(tmp_path / "a.wav", "sha256")
    assert size == (tmp_path / "a.wav").stat().st_size
    # same samples, same bytes (libsndfile would stamp the time into a PEAK chunk)
    write_wav(tmp_path / "b.wav", audio.astype(np.float64), 44100)
    assert (tmp_path / "b.wav").read_bytes() == (tmp_path / "a.wav").read_bytes()
    assert wav_bytes(audio, 44100) == (tmp_path / "a.wav").read_bytes()


def test_pcm24_round_trip_with_odd_data_length(tmp_path):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-2**23, 2**23, size=(1001, 1)).astype(np.int32)   # 3003 bytes: padded
    _, size = write_wav(tmp_path / "p.wav", pcm, 22050, "PCM_24")
    assert size == (tmp_path / "p.wav").stat().st_size and size % 2 == 0
    back, sr = sf.read(tmp_path / "p.wav", dtype="int32", always_2d=True)
    assert sr == 22050 and sf.info(str(tmp_path / "p.wav")).subtype == "PCM_24"
    assert np.array_equal(back >> 8, pcm)                 # libsndfile left-aligns 24 in 32 bits


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="integer samples"):
        write_wav(tmp_path / "x.wav", np.zeros((10, 2), np.float32), 44100, "PCM_24")
    with pytest.raises(ValueError, match="unsupported WAV subtype"):
        write_wav(tmp_path / "x.wav", np.zeros((10, 2), np.float32), 44100, "PCM_16")
    assert not list(tmp_path.iterdir())                   # nothing half-written
