"""A user's audio file as a random-access stereo mixture at the model's rate, in bounded memory.

Decoding is :func:`iass.pipelines.audio.open_audio`, the reader the corpus build uses too: any
format ffmpeg decodes (WAV, FLAC, MP3, OGG, M4A/AAC, MP4; of a MUSDB ``.stem.mp4`` stream 0, the
mixture). A file at another rate than the model's is resampled block by block (soxr's streaming
resampler) into a temporary float WAV, so neither decoding nor resampling ever holds the whole
track in memory. Mono is duplicated to stereo; more than two channels is refused (which two
would be the mixture is not ours to guess). Every unusable input is an :class:`AudioInputError`
(an ``iass.errors.AudioError``) whose one line names the file.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from iass.pipelines.audio import BLOCK, AudioFileError, open_audio

#: the error of an unusable input file (the reader's own: also a TrackError and an AudioError)
AudioInputError = AudioFileError


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
        raise AudioInputError(path, f"{block.shape[1]} channels; separation needs mono or stereo")
    return block


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
def open_mixture(path: str | Path, sample_rate: int, stream: int | None = None) -> Iterator[MixtureSource]:
    """Yield a :class:`MixtureSource` for ``path`` (audio stream ``stream`` of a multi-stream
    file, default the first) at ``sample_rate``; temporary files are removed on exit."""
    import soundfile as sf

    path = Path(path)
    with open_audio(path, stream) as audio, contextlib.ExitStack() as stack:
        src, notes = audio.file, list(audio.notes)
        if src.channels > 2:
            raise AudioInputError(path, f"{src.channels} channels; separation needs mono or stereo")
        reader = src
        if src.samplerate != sample_rate:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iass-separate-")))
            _resample_to(src, path, tmp / "resampled.wav", sample_rate)
            notes.append(f"resampled {src.samplerate} -> {sample_rate} Hz")
            reader = stack.enter_context(sf.SoundFile(str(tmp / "resampled.wav")))
        if src.channels == 1:
            notes.append("mono duplicated to stereo")
        if reader.frames == 0:
            raise AudioInputError(path, "no audio samples")

        def read(start: int, count: int) -> np.ndarray:
            reader.seek(start)
            return _stereo(reader.read(count, dtype="float32", always_2d=True), path)

        yield MixtureSource(Path(reader.name), sample_rate, reader.frames, read, notes)
