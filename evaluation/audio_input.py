"""A user's audio file as a random-access stereo mixture at the model's rate, in bounded memory.

WAV / FLAC / MP3 / OGG are read by libsndfile (soundfile); anything else ffmpeg can decode (M4A,
AAC, ...) goes through the ffmpeg binary of imageio-ffmpeg. A file at another rate than the
model's is resampled block by block (soxr's streaming resampler) into a temporary float WAV, so
neither decoding nor resampling ever holds the whole track in memory. Mono is duplicated to
stereo; more than two channels is refused (which two would be the mixture is not ours to guess).
"""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from iass.errors import AudioError

BLOCK = 1 << 16


class AudioInputError(AudioError):
    """The file cannot be used as a mixture (message names the file and the problem)."""


@dataclass
class MixtureSource:
    path: Path                       # the file actually read (the original or a temporary WAV)
    sample_rate: int
    n_samples: int
    read: Callable[[int, int], np.ndarray]
    notes: list[str]


def _stereo(block: np.ndarray, path: Path) -> np.ndarray:
    if block.shape[1] == 1:
        return np.repeat(block, 2, axis=1)
    if block.shape[1] != 2:
        raise AudioInputError(f"{path}: {block.shape[1]} channels; separation needs mono or stereo")
    return block


def _decode_with_ffmpeg(path: Path, out: Path) -> None:
    from iass.pipelines.audio import ffmpeg_exe

    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(path),
         "-vn", "-acodec", "pcm_f32le", "-f", "wav", str(out)],
        capture_output=True, text=True, errors="replace",
    )
    if proc.returncode != 0 or not out.exists():
        msg = " ".join(proc.stderr.split())[:200] or f"exit code {proc.returncode}"
        raise AudioInputError(f"{path}: cannot decode ({msg})")


def _resample_to(src, path: Path, out: Path, sample_rate: int) -> None:
    """Stream ``src`` (an open SoundFile) through soxr into a float WAV at ``sample_rate``."""
    import soundfile as sf
    import soxr

    channels = 2
    stream = soxr.ResampleStream(src.samplerate, sample_rate, channels, dtype="float32", quality="HQ")
    with sf.SoundFile(str(out), "w", samplerate=sample_rate, channels=channels, subtype="FLOAT",
                      format="WAV") as dst:
        while True:
            block = src.read(BLOCK, dtype="float32", always_2d=True)
            last = len(block) < BLOCK
            y = stream.resample_chunk(_stereo(block, path), last=last)
            if len(y):
                dst.write(y)
            if last:
                break


@contextlib.contextmanager
def open_mixture(path: str | Path, sample_rate: int) -> Iterator[MixtureSource]:
    """Yield a :class:`MixtureSource` for ``path`` at ``sample_rate``; temporary files are
    removed on exit."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such file")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="iass-separate-") as tmp:
        tmp = Path(tmp)
        try:
            src = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError):
            decoded = tmp / "decoded.wav"
            _decode_with_ffmpeg(path, decoded)
            notes.append("decoded with ffmpeg")
            src = sf.SoundFile(str(decoded))
        with src:
            if src.channels > 2:
                raise AudioInputError(f"{path}: {src.channels} channels; separation needs mono or stereo")
            if src.samplerate != sample_rate:
                resampled = tmp / "resampled.wav"
                _resample_to(src, path, resampled, sample_rate)
                notes.append(f"resampled {src.samplerate} -> {sample_rate} Hz")
                reader = sf.SoundFile(str(resampled))
            elif src.format in ("WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64") and src.seekable():
                reader = sf.SoundFile(str(path))
            else:
                # compressed formats seek imprecisely: decode once to a float WAV
                plain = tmp / "plain.wav"
                with sf.SoundFile(str(plain), "w", samplerate=sample_rate, channels=2,
                                  subtype="FLOAT", format="WAV") as dst:
                    while True:
                        block = src.read(BLOCK, dtype="float32", always_2d=True)
                        if not len(block):
                            break
                        dst.write(_stereo(block, path))
                notes.append(f"decoded {src.format}")
                reader = sf.SoundFile(str(plain))
            if src.channels == 1:
                notes.append("mono duplicated to stereo")
        with reader:
            n = reader.frames
            if n == 0:
                raise AudioInputError(f"{path}: no audio samples")

            def read(start: int, count: int) -> np.ndarray:
                reader.seek(start)
                block = reader.read(count, dtype="float32", always_2d=True)
                return _stereo(block, path)

            yield MixtureSource(Path(reader.name), sample_rate, n, read, notes)
