"""BSS Eval v4 metrics: iass.evaluation.metrics vs museval on the same estimates, in one run.

Four stereo sources (different spectra, a silent second in one of them), estimates that mix,
filter and add noise; ``museval.evaluate`` (1 s windows) and ``bss_eval_v4`` on the same arrays.
Reports seconds per minute of audio for each (ours: the best of ``repeats`` runs, as the
machine may be shared), the speed-up, and the largest difference of
per-window and per-track (median) scores. Also the evaluation's own use: each target scored
against (target, rest of the mixture) with several methods' estimates at once.
"""
from __future__ import annotations

import time

import numpy as np

SR = 44100


def _signals(seconds: float, n_src: int = 4, seed: int = 0):
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    refs = np.zeros((n_src, n, 2))
    for j in range(n_src):
        refs[j] = lfilter([1.0], [1.0, -0.9 + 0.4 * j], rng.standard_normal((n, 2)), axis=0)
    refs[1, 2 * SR: 3 * SR] = 0.0
    mixing = 0.25 * rng.uniform(size=(n_src, n_src)) + np.eye(n_src)
    est = np.einsum("ij,jnc->inc", mixing, refs) + 0.05 * rng.standard_normal(refs.shape)
    est = lfilter([1.0, 0.4, -0.2], [1.0], est, axis=1)
    return refs.astype(np.float32), est.astype(np.float32)


def main(seconds: float = 60.0, repeats: int = 3, threads: int = 1) -> dict:
    import torch

    from iass.evaluation.metrics import bss_eval_v4, score_target
    from iass.evaluation.museval_ref import import_museval

    torch.set_num_threads(threads)
    museval = import_museval()
    refs, est = _signals(seconds)
    per_min = 60.0 / seconds
    bss_eval_v4(*_signals(2.0, seed=1))            # warm-up: lazy imports out of the timing

    t0 = time.perf_counter()
    expected = museval.evaluate(refs, est, win=SR, hop=SR)
    t_museval = time.perf_counter() - t0
    # the machine may be shared: the best of a few runs of ours (museval, ~1 min, runs once)
    t_fast = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = bss_eval_v4(refs, est, win=SR, hop=SR)
        t_fast = min(t_fast, time.perf_counter() - t0)

    ours = (got.sdr, got.isr, got.sir, got.sar)
    window_diff = max(float(np.nanmax(np.abs(a - b))) for a, b in zip(expected, ours))
    track_diff = max(float(np.max(np.abs(np.nanmedian(a, 1) - np.nanmedian(b, 1))))
                     for a, b in zip(expected, ours))
    same_nan = all(np.array_equal(np.isnan(a), np.isnan(b)) for a, b in zip(expected, ours))

    # the evaluation's pattern: per target, (target, rest) and 3 methods' estimates at once
    mixture = refs.sum(0)
    t_eval = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for j in range(refs.shape[0]):
            score_target(refs[j], mixture - refs[j], np.stack([est[j], mixture, 0.5 * (est[j] + refs[j])]))
        t_eval = min(t_eval, time.perf_counter() - t0)

    result = {
        "audio_seconds": seconds,
        "sources": refs.shape[0],
        "torch_threads": threads,
        "museval_s_per_min": t_museval * per_min,
        "iass_s_per_min": t_fast * per_min,
        "speedup_x": t_museval / t_fast,
        "max_window_diff_db": window_diff,
        "max_track_median_diff_db": track_diff,
        "same_excluded_windows": same_nan,
        "evaluate_4_targets_x_3_methods_s_per_min": t_eval * per_min,
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    return result


if __name__ == "__main__":
    main()
