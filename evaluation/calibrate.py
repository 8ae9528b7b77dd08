"""Activity thresholds tuned on a held-out split (``evaluate.threshold_split``).

The paper applies one threshold (0.5) to every instrument's activity probability. A multi-target
detector is not calibrated alike for every target (a sparse instrument's probability may rarely
reach 0.5 where it plays). Tuning one threshold per target on the validation split (never the
split being scored) is the usual remedy in instrument activity detection: for each target, the
threshold of ``GRID`` whose *applied* decision (threshold, then the same median filter as
separation) has the best F1 over the split's labelled frames, pooled over its tracks; ties go to
the threshold nearest 0.5.

The best detector is not the best gate for separation: a missed frame mutes the target, a false
alarm only lets leakage through, so F1 (which weighs both alike) can pick a threshold that costs
SDR. On the demo it did (README, "Demo results"), so the demo keeps 0.5; this is a tool, off by
default (``evaluate.threshold_split: null``).
"""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np

#: candidate thresholds: 0.05, 0.10, ..., 0.95
GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def split_activity(corpus, separator, track_ids: list[str], config) -> dict[str, list[tuple]]:
    """{target: [(probability (T,), truth (T,) with NaN unknown), ...]} over ``track_ids``, from
    the separator's activity head on each whole track (the evaluation's own separation path)."""
    from iass.evaluation.separate import separate_variants

    sep_config = replace(config, weighting="none")
    out: dict[str, list[tuple]] = {t: [] for t in separator.targets}
    for tid in track_ids:
        res = separate_variants(corpus.read_mixture(tid), separator, sep_config, ("none",))["none"]
        if res.probability is None:
            raise ValueError(f"{separator.name}: the run has no activity head to calibrate")
        truth = corpus.read_activity(tid, list(separator.targets))
        for k, t in enumerate(separator.targets):
            n = min(len(truth[k]), res.probability.shape[1])
            if not np.isnan(truth[k][:n]).all():
                out[t].append((res.probability[k, :n], truth[k][:n]))
    return out


def best_threshold(tracks: list[tuple], median_frames: int, grid=GRID) -> tuple[float, float]:
    """(threshold, F1) of the best applied decision over the tracks' labelled frames; (0.5, NaN)
    when the tracks have no labelled frame or the target never plays in them."""
    from iass.evaluation.separate import median_filter_binary

    best = (0.5, float("nan"))
    best_key = None
    for th in grid:
        tp = fp = fn = 0
        for prob, truth in tracks:
            decision = median_filter_binary(prob >= th, median_frames)
            known = ~np.isnan(truth)
            d, t = decision[known], truth[known] > 0.5
            tp += int(np.sum(d & t))
            fp += int(np.sum(d & ~t))
            fn += int(np.sum(~d & t))
        if tp + fn == 0:
            return best                       # never active here: nothing to tune on
        f1 = 2 * tp / (2 * tp + fp + fn)
        key = (f1, -abs(th - 0.5))
        if best_key is None or key > best_key:
            best, best_key = (float(th), float(f1)), key
    return best


def tune_thresholds(corpus, separator, split: str, config, progress: bool = True) -> dict[str, dict]:
    """{target: {"threshold": t, "f1": f1, "tracks": n}} for a separator on ``split``."""
    track_ids = corpus.track_ids(split=split)
    if not track_ids:
        raise SystemExit(f"{corpus.root}: no tracks in split {split!r} to tune thresholds on")
    if progress:
        print(f"tuning activity thresholds of {separator.name} on {len(track_ids)} {split} tracks",
              file=sys.stderr, flush=True)
    per_target = split_activity(corpus, separator, track_ids, config)
    out = {}
    for t in separator.targets:
        th, f1 = best_threshold(per_target[t], config.median_frames)
        out[t] = {"threshold": th, "f1": f1, "tracks": len(per_target[t])}
    return out
