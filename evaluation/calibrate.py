"""Activity thresholds tuned on a held-out split (``evaluate.threshold_split``).

The paper applies one threshold (0.5) to every instrument's activity probability. A multi-target
detector is not calibrated alike for every target (a sparse instrument's probability may rarely
reach 0.5 where it plays), so each target's threshold can be tuned on the validation split (never
the split being scored). Three criteria (``evaluate.threshold_metric``):

- ``sdr`` (the default): the threshold that separates best. The gate's cost is asymmetric: a frame
  wrongly closed mutes the target (its whole energy becomes error), a frame wrongly left open only
  keeps the leakage the unweighted mask has anyway. So the gate is chosen by what it does to the
  separation: for each validation track, one pass of the network gives per STFT frame the
  energies of the reference ``S``, of the unweighted estimate ``M X`` and their cross term, so the
  error ``|S - d M X|^2`` of any decision ``d`` follows exactly, in the STFT domain. A threshold's
  score is the plain signal-to-distortion ratio ``10 log10(|S|^2 / error)`` of the gated estimate
  per window (the report's window length) where the target sounds, aggregated as the report does
  (median over a track's windows, then over tracks): no BSS Eval distortion filter, but on the
  demo it follows the report's SDR within a few tenths of a dB. ``0.0`` (the gate always open: no
  weighting) is a candidate; scores within ``TIE_DB`` (0.05 dB) of the best are ties, and ties go to
  the open gate, then to the threshold nearest 0.5: a target is weighted only where that
  measurably helps on the validation split. (The estimate is the mask
  on the mixture before any Wiener post-filter.) A mean over windows instead of medians was tried
  and is wrong for this: it is ruled by the windows where the estimate is poor (below 0 dB),
  where muting always "wins" (0 dB), and it muted electric guitar on the demo.
- ``safe``: the same scores and ties, but among the ties the threshold nearest the paper's 0.5
  wins and the open gate comes last: the paper's gate wherever the validation split says it costs
  the separation nothing (within ``TIE_DB``), the nearest one that does not where the detector is
  not calibrated alike (a target whose probability rarely reaches 0.5 where it plays), and no
  weighting only where every gate costs. ``sdr`` keeps a gate only where it measurably *gains*;
  since a correct gate changes only the few scored windows where the target is partly silent,
  that is rarely the case and ``sdr`` mostly turns weighting off, losing what it removes in the
  silences (PES). ``safe`` keeps that, at no measured cost in SDR. Why it exists: the fixed 0.5
  gate muted electric guitar on one machine's training of the demo (recall 0.37: median SDR 0.00
  against 1.91 unweighted), where the same configuration on another machine had recall 0.82.
- ``f1``: the best detector, the usual remedy in instrument activity detection: the threshold whose
  *applied* decision (threshold, then the separation's median filter) has the best F1 over the
  split's labelled frames. On the demo it cost electric guitar 1.5 dB (README, "Demo results").
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from iass.errors import ConfigError, CorpusError

log = logging.getLogger(__name__)

#: candidate thresholds: 0.05, 0.10, ..., 0.95
GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: the open gate: every frame passes (no weighting for that target)
OPEN = 0.0
#: gate scores (dB) closer than this to the best are ties
TIE_DB = 0.05
METRICS = ("sdr", "safe", "f1")
#: how ``best_gate`` breaks ties: "open" (no weighting first) or "paper" (nearest 0.5 first)
PREFER = ("open", "paper")


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

    labelled = []
    for prob, truth in tracks:
        known = ~np.isnan(truth)
        labelled.append((known, truth[known] > 0.5))
    if not any(t.any() for _, t in labelled):
        return 0.5, float("nan")              # never active here: nothing to tune on
    best = (0.5, float("nan"))
    best_key = None
    for th in grid:
        tp = fp = fn = 0
        for (prob, _), (known, t) in zip(tracks, labelled):
            d = median_filter_binary(prob >= th, median_frames)[known]
            tp += int(np.sum(d & t))
            fp += int(np.sum(d & ~t))
            fn += int(np.sum(~d & t))
        f1 = 2 * tp / (2 * tp + fp + fn)
        key = (f1, -abs(th - 0.5))
        if best_key is None or key > best_key:
            best, best_key = (float(th), float(f1)), key
    return best


# ------------------------------------------------------------------ the gate that separates best
def gate_energies(corpus, separator, track_id: str, config) -> dict[str, tuple]:
    """{target: (probability, |S|^2, |M X|^2, Re<S, M X>)} for one track, each (T,): the activity
    probability and, per STFT frame (summed over channels and bins), the energies of the
    reference ``S`` and of the unweighted estimate ``M X`` and their cross term, from which the
    error of any gate follows. Chunked like separation (bounded memory); only targets whose audio
    the corpus knows."""
    from iass.evaluation.separate import separate_stream
    from iass.evaluation.stft import hann, stft_frames
    from iass.pipelines.corpus_format import num_frames

    if not separator.has_activity:
        raise ValueError(f"{separator.name}: the run has no activity head to calibrate")
    mixture = corpus.read_mixture(track_id)
    n, n_fft, hop = len(mixture), int(separator.n_fft), int(separator.hop)
    known = [(k, t) for k, t in enumerate(separator.targets) if corpus.target_known(track_id, t)]
    refs = {t: corpus.read_target(track_id, t) for _, t in known}
    T, window = num_frames(n, hop), hann(n_fft)
    prob = np.zeros((len(separator.targets), T))
    ref_e, est_e, cross = np.zeros_like(prob), np.zeros_like(prob), np.zeros_like(prob)
    for part in separate_stream(lambda s, c: mixture[s: s + c], n, separator,
                                replace(config, weighting="none"), ("none",), spectra=True):
        if part["probability"] is None:
            raise ValueError(f"{separator.name}: no activity logits to calibrate")
        a, b = part["frames"]
        prob[:, a:b] = part["probability"]
        est = part["spectrum"]                                                # (K, C, F, t)
        for k, t in known:
            ref = stft_frames(lambda s, c, r=refs[t]: r[s: s + c], n, n_fft, hop, a, b, window)
            ref_e[k, a:b] = (ref.abs() ** 2).sum((0, 1)).double().numpy()
            est_e[k, a:b] = (est[k].abs() ** 2).sum((0, 1)).double().numpy()
            cross[k, a:b] = (ref.conj() * est[k]).real.sum((0, 1)).double().numpy()
    return {t: (prob[k], ref_e[k], est_e[k], cross[k]) for k, t in known}


def gate_score(tracks: list[tuple], threshold: float, median_frames: int, window_frames: int) -> float:
    """The gated estimate's SDR (dB) aggregated as the report does: per track the median over the
    windows where the target sounds, then the median over tracks. NaN when it never sounds."""
    from iass.evaluation.separate import median_filter_binary

    per_track = []
    w = max(1, int(window_frames))
    for prob, ref_e, est_e, cross in tracks:
        if threshold <= OPEN:
            d = np.ones(len(prob), dtype=bool)
        else:
            d = median_filter_binary(prob >= threshold, median_frames)
        err = np.where(d, est_e - 2 * cross + ref_e, ref_e)      # |S - d M X|^2 per frame
        m = -(-len(err) // w) * w
        ref_w = np.pad(ref_e, (0, m - len(err))).reshape(-1, w).sum(1)
        err_w = np.pad(err, (0, m - len(err))).reshape(-1, w).sum(1)
        sounding = ref_w > 0
        if sounding.any():
            per_track.append(float(np.median(
                10 * np.log10(ref_w[sounding] / np.maximum(err_w[sounding], 1e-20)))))
    return float(np.median(per_track)) if per_track else float("nan")


def best_gate(tracks: list[tuple], median_frames: int, window_frames: int, grid=GRID,
              tolerance_db: float = TIE_DB, prefer: str = "open") -> tuple[float, float, float]:
    """(threshold, score, gain over the open gate) of the gate that separates best on ``tracks``.
    Scores within ``tolerance_db`` of the best are ties (the proxy is no finer than that); among
    them, ``prefer="open"``: the open gate wins, then the threshold nearest 0.5;
    ``prefer="paper"``: the threshold nearest 0.5 wins (the lower of two as near), the open gate
    last. (0.0, NaN, 0.0) when the target never sounds in the tracks (nothing to tune on: not
    weighted)."""
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {', '.join(PREFER)}, not {prefer!r}")
    base = gate_score(tracks, OPEN, median_frames, window_frames)
    if np.isnan(base):
        return OPEN, float("nan"), 0.0
    scores = {OPEN: base, **{float(th): gate_score(tracks, th, median_frames, window_frames)
                             for th in grid}}
    top = max(scores.values())
    ties = [th for th, v in scores.items() if v >= top - tolerance_db]
    if prefer == "open":
        th = min(ties, key=lambda t: (t != OPEN, abs(t - 0.5), t))
    else:
        th = min(ties, key=lambda t: (t == OPEN, abs(t - 0.5), t))
    return th, scores[th], scores[th] - base


def tune_thresholds(corpus, separator, split: str, config, progress: bool = True,
                    metric: str = "sdr", win_seconds: float = 1.0) -> dict[str, dict]:
    """{target: {"threshold": t, "score": s, "metric": metric, "tracks": n, ...}} for a separator
    on ``split``; the score is the F1 or the SDR (dB) of the chosen gate, and ``sdr`` / ``safe``
    add ``gain_db`` (over no weighting)."""
    if metric not in METRICS:
        raise ConfigError(f"threshold metric must be one of {', '.join(METRICS)}, not {metric!r}")
    track_ids = corpus.track_ids(split=split)
    if not track_ids:
        raise CorpusError(f"{corpus.root}: no tracks in split {split!r} to tune thresholds on")
    if progress:
        log.info("tuning activity thresholds of %s on %d %s tracks (best %s)",
                 separator.name, len(track_ids), split, metric)
    out = {}
    if metric == "f1":
        per_target = split_activity(corpus, separator, track_ids, config)
        for t in separator.targets:
            th, f1 = best_threshold(per_target[t], config.median_frames)
            out[t] = {"threshold": th, "score": f1, "metric": "f1",
                      "tracks": len(per_target[t])}
        return out
    per_target: dict[str, list[tuple]] = {t: [] for t in separator.targets}
    for tid in track_ids:
        for t, energies in gate_energies(corpus, separator, tid, config).items():
            if energies[1].any():                 # the target sounds somewhere
                per_target[t].append(energies)
    window_frames = int(round(win_seconds * separator.sample_rate / separator.hop))
    for t in separator.targets:
        th, score, gain = best_gate(per_target[t], config.median_frames, window_frames,
                                    prefer="paper" if metric == "safe" else "open")
        out[t] = {"threshold": th, "score": score, "gain_db": gain, "metric": metric,
                  "tracks": len(per_target[t])}
    return out
