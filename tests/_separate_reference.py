"""The one-shot reference of separation (used by tests only): the whole track in one pass with
``torch.stft`` / ``torch.istft`` and ``scipy.signal.medfilt``. The chunked path of
``iass.evaluation.separate`` must equal it (short tracks only: it holds the whole STFT)."""
from __future__ import annotations

import numpy as np

from iass.evaluation.separate import (Separation, SeparationConfig, _masks, sigmoid,
                                      wiener_filter)
from iass.evaluation.stft import hann


def separate_oneshot(mixture: np.ndarray, separator,
                     config: SeparationConfig = SeparationConfig()) -> Separation:
    """The whole track in one pass with ``torch.stft`` / ``torch.istft`` and
    ``scipy.signal.medfilt``: the reference the chunked path must equal (short tracks only)."""
    import torch
    from scipy.signal import medfilt

    n_fft, hop = int(separator.n_fft), int(separator.hop)
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(mixture, dtype=np.float32).T))
    window = hann(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)
    mask, logits = _masks(separator, spec.abs())
    prob = dec = None
    if separator.has_activity and logits is not None:
        prob = sigmoid(logits).astype(np.float32)
        raw = (prob >= config.thresholds(prob.shape[0])).astype(np.float64)
        dec = np.stack([medfilt(r, config.median_frames) for r in raw]) > 0.5
        if config.weighting == "hard":
            mask = mask * torch.from_numpy(dec.astype(np.float32))[:, None, None, :]
        elif config.weighting == "soft":
            mask = mask * torch.from_numpy(prob)[:, None, None, :]
    if config.wiener:
        est = torch.from_numpy(wiener_filter((mask * spec.abs()).numpy(), spec.numpy(),
                                             config.wiener_iterations))
    else:
        est = mask * spec
    K = est.shape[0]
    audio = torch.istft(est.reshape(K * 2, *est.shape[2:]), n_fft, hop, window=window,
                        center=True, length=x.shape[1]).reshape(K, 2, -1)
    return Separation(list(separator.targets), int(separator.sample_rate), hop,
                      audio.permute(0, 2, 1).numpy().astype(np.float32), prob, dec)
