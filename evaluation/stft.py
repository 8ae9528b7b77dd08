"""The STFT of separation, chunk by chunk: frames of ``torch.stft(center=True)`` of a whole
signal read piece by piece, and the streaming inverse (``torch.istft``) over consecutive chunks.

Frames follow the corpus' convention (:func:`iass.pipelines.corpus_format.num_frames`: frame
``k`` is centred on sample ``k * hop``; ``n // hop + 1`` frames).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from iass.pipelines.corpus_format import num_frames


def hann(n_fft: int):
    import torch

    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def stft_frames(read: Callable[[int, int], np.ndarray], n_samples: int, n_fft: int, hop: int,
                lo: int, hi: int, window=None):
    """Frames ``lo..hi-1`` of ``torch.stft(x.T, n_fft, hop, window=hann, center=True)`` of the
    whole signal, reading only the samples they cover. ``read(start, count)`` -> (count, C).
    Returns complex64 (C, n_fft // 2 + 1, hi - lo)."""
    import torch

    half = n_fft // 2
    if n_samples <= half:
        raise ValueError(f"signal of {n_samples} samples is too short for n_fft {n_fft} "
                         f"(reflect padding needs more than {half})")
    window = hann(n_fft) if window is None else window
    # sample index (original coordinates) of every position of the frames; reflect at the ends
    idx = np.arange(lo * hop - half, (hi - 1) * hop + half)
    idx = np.where(idx < 0, -idx, idx)
    idx = np.where(idx >= n_samples, 2 * (n_samples - 1) - idx, idx)
    s0, s1 = int(idx.min()), int(idx.max()) + 1
    seg = np.asarray(read(s0, s1 - s0), dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(seg[idx - s0].T))            # (C, L)
    frames = x.unfold(1, n_fft, hop)                                        # (C, hi - lo, n_fft)
    return torch.fft.rfft(frames * window, dim=2).transpose(1, 2)          # (C, F, t)


class OverlapAdd:
    """Streaming inverse STFT (``torch.istft(center=True, length=n)``) over consecutive frame
    chunks: frames are pushed in order, finished samples come out, the tail waits."""

    def __init__(self, n_samples: int, n_fft: int, hop: int, window=None):
        self.n, self.n_fft, self.hop = int(n_samples), int(n_fft), int(hop)
        self.window = hann(n_fft) if window is None else window
        self.n_frames = num_frames(n_samples, hop)
        self.next_frame = 0
        self.emitted = 0                    # samples [0, emitted) are out
        self.buf = None                     # (K, C, m) pending sums from sample `emitted`
        self.env = None                     # (m,) pending window-square sums

    def push(self, spec) -> np.ndarray:
        """spec: complex (K, C, F, t) for frames ``next_frame .. next_frame + t - 1``.
        Returns the finished samples (K, m, C) float32 (m may be 0)."""
        import torch
        import torch.nn.functional as F

        K, C, _, t = spec.shape
        a, b = self.next_frame, self.next_frame + t
        if b > self.n_frames:
            raise ValueError(f"pushed frames up to {b} but the track has {self.n_frames}")
        half = self.n_fft // 2
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=2) * self.window[:, None]   # (K, C, n_fft, t)
        span = (t - 1) * self.hop + self.n_fft
        local = F.fold(frames.reshape(K * C, self.n_fft, t), output_size=(1, span),
                       kernel_size=(1, self.n_fft), stride=(1, self.hop)).reshape(K, C, span)
        wsq = (self.window ** 2)[:, None].expand(self.n_fft, t)
        local_env = F.fold(wsq[None], output_size=(1, span), kernel_size=(1, self.n_fft),
                           stride=(1, self.hop)).reshape(span)
        start = a * self.hop - half                   # original sample index of local[0]
        # keep only samples inside [emitted, n)
        cut0 = max(self.emitted - start, 0)
        local, local_env = local[..., cut0:], local_env[cut0:]
        start += cut0
        end = min(start + local.shape[-1], self.n)
        local, local_env = local[..., : max(end - start, 0)], local_env[: max(end - start, 0)]
        # grow the pending buffer to cover [emitted, end) and add
        need = max(end - self.emitted, 0)
        if self.buf is None:
            self.buf = torch.zeros((K, C, need), dtype=local.dtype)
            self.env = torch.zeros(need, dtype=local_env.dtype)
        elif self.buf.shape[-1] < need:
            grow = need - self.buf.shape[-1]
            self.buf = F.pad(self.buf, (0, grow))
            self.env = F.pad(self.env, (0, grow))
        off = start - self.emitted
        self.buf[..., off: off + local.shape[-1]] += local
        self.env[off: off + local_env.shape[-1]] += local_env
        self.next_frame = b
        # samples before the first sample of frame b are final
        ready = self.n if b == self.n_frames else min(self.n, b * self.hop - half)
        m = max(ready - self.emitted, 0)
        out = self.buf[..., :m] / self.env[:m].clamp_min(1e-11)
        self.buf, self.env = self.buf[..., m:], self.env[m:]
        self.emitted += m
        return out.permute(0, 2, 1).numpy().astype(np.float32, copy=False)
