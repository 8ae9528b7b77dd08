"""Reference methods scored beside the models, on the same windows of the same tracks.

- ``IBM``: the ideal binary mask, an upper bound for a mask on the mixture STFT: per channel,
  bin and frame, keep the mixture where the target's magnitude exceeds the magnitude of the rest
  of the mixture (mixture - target), on the models' STFT (Hann, ``center=True``), then iSTFT.
- ``input-SDR``: the mixture itself as the estimate of every target: the lower bound, i.e. the
  score of doing nothing (SiSEC's "MIX" baseline).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from iass.evaluation.stft import OverlapAdd, hann, stft_frames
from iass.pipelines.corpus_format import num_frames


def ideal_binary_mask(read_mixture: Callable[[int, int], np.ndarray],
                      read_targets: list[Callable[[int, int], np.ndarray]], n_samples: int,
                      n_fft: int = 4096, hop: int = 1024, chunk_frames: int = 512) -> np.ndarray:
    """IBM estimates (K, n, 2) float32 of the targets read by ``read_targets[k](start, count)``;
    computed in chunks of frames (bounded memory) with the streaming overlap-add of separation."""
    import torch

    K = len(read_targets)
    T = num_frames(n_samples, hop)
    window = hann(n_fft)
    ola = OverlapAdd(n_samples, n_fft, hop, window)
    out = np.zeros((K, n_samples, 2), dtype=np.float32)
    for a in range(0, T, chunk_frames):
        b = min(a + chunk_frames, T)
        mix = stft_frames(read_mixture, n_samples, n_fft, hop, a, b, window)          # (C, F, t)
        est = torch.empty((K,) + tuple(mix.shape), dtype=mix.dtype)
        for k, read in enumerate(read_targets):
            tgt = stft_frames(read, n_samples, n_fft, hop, a, b, window)
            est[k] = torch.where(tgt.abs() > (mix - tgt).abs(), mix, torch.zeros((), dtype=mix.dtype))
        audio = ola.push(est)
        start = ola.emitted - audio.shape[1]
        out[:, start: start + audio.shape[1]] = audio
    return out


def input_estimate(mixture: np.ndarray, n_targets: int) -> np.ndarray:
    """The mixture as the estimate of each target: (K, n, 2) (a broadcast view, no copy)."""
    mixture = np.asarray(mixture, dtype=np.float32)
    return np.broadcast_to(mixture, (n_targets,) + mixture.shape)
