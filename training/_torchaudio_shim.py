"""A stand-in for the few ``torchaudio`` names that ``openunmix`` touches, used ONLY while
importing ``openunmix`` when no working torchaudio is installed.

Why: ``openunmix`` 1.3.0 does ``import torchaudio`` at import time (in ``openunmix/__init__``,
``utils``, ``transforms`` and ``data``) although its model (``openunmix.model.OpenUnmix``) never
calls it. The only torchaudio in our registry is a CUDA build that cannot load beside the CPU
torch (``OSError: libc10_cuda.so``). :func:`iass.training.umx.import_openunmix` puts this module
under the name ``torchaudio`` in ``sys.modules`` for the duration of that import and removes it
afterwards, so no other code ever sees a fake torchaudio.

What it provides, with torchaudio's signatures and return conventions, read through soundfile
(the backend torchaudio itself uses for WAV when ``soundfile`` is selected):
``load``, ``info``, ``save``, ``get_audio_backend``, ``set_audio_backend`` — what
``openunmix.data``'s dataset classes call (used by ``bench/bench_loader.py`` to run Open-Unmix's
own ``FixedSourcesTrackFolderDataset``). Anything else raises a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IS_SHIM = True
__version__ = "0.0+iass-shim"


@dataclass
class AudioMetaData:
    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int = 0
    encoding: str = "PCM_F"


def get_audio_backend() -> str:
    return "soundfile"


def set_audio_backend(backend) -> None:
    if backend not in (None, "soundfile"):
        raise RuntimeError(f"torchaudio stand-in: only the soundfile backend exists, not {backend!r}")


def info(path, *args, **kwargs) -> AudioMetaData:
    import soundfile as sf

    i = sf.info(str(path))
    return AudioMetaData(sample_rate=i.samplerate, num_frames=i.frames, num_channels=i.channels)


def load(path, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
         channels_first: bool = True, **kwargs):
    """(channels, frames) float32 tensor and the sample rate, as ``torchaudio.load``."""
    import soundfile as sf

    data, rate = sf.read(str(path), start=int(frame_offset), frames=int(num_frames),
                         dtype="float32", always_2d=True)
    tensor = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
    return tensor, rate


def save(path, src, sample_rate: int, channels_first: bool = True, **kwargs) -> None:
    import soundfile as sf

    data = src.detach().cpu().numpy()
    sf.write(str(path), data.T if channels_first else data, int(sample_rate))


def __getattr__(name: str):
    raise AttributeError(
        f"torchaudio.{name}: torchaudio is not installed; iass imports openunmix with a stand-in "
        "that only provides load/info/save (see iass/training/_torchaudio_shim.py)"
    )
