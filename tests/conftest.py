"""Shared test fixtures: the real metadata in ../shared/data, and a WAV writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iass import REPO_ROOT

#: the real metadata of the corpora (see its README.md): <repo>/../shared/data
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips (with the reason) when this checkout does not have it."""
    if not (SHARED_DATA / "medleydb" / "metadata").is_dir():
        pytest.skip(f"real corpus metadata not available at {SHARED_DATA} (../shared/data relative to the repo)")
    return SHARED_DATA


def make_audio(seconds: float = 0.2, sample_rate: int = 44100, channels: int = 2, seed: int = 0,
               frames: int | None = None) -> np.ndarray:
    """Deterministic test audio (frames, channels) in [-0.5, 0.5]: a tone plus a little noise."""
    n = int(round(seconds * sample_rate)) if frames is None else frames
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    f0 = 110.0 * (1 + seed % 7)
    cols = [0.3 * np.sin(2 * np.pi * f0 * (c + 1) * t) + 0.05 * rng.standard_normal(n) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_wav(path: str | Path, seconds: float = 0.2, sample_rate: int = 44100, channels: int = 2,
              seed: int = 0, subtype: str = "PCM_16", data: np.ndarray | None = None,
              format: str | None = None, frames: int | None = None) -> np.ndarray:
    """Write test audio to ``path`` (parents created); returns the samples written (float32)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = make_audio(seconds, sample_rate, channels, seed, frames)
    sf.write(str(path), data, sample_rate, subtype=subtype, format=format)
    return data


@pytest.fixture
def wav_writer():
    """``wav_writer(path, seconds=.., sample_rate=.., channels=.., seed=.., subtype=.., data=..)``."""
    return write_wav
