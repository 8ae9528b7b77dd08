"""Per-target activity thresholds tuned on a held-out split (evaluation/calibrate.py)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from scipy.signal import medfilt

from corpus_fixtures import BandSeparator, write_eval_corpus
from iass.errors import ConfigError
from iass.evaluation.calibrate import (GRID, OPEN, TIE_DB, best_gate, best_threshold, gate_energies,
                                      gate_score, tune_thresholds)
from iass.evaluation.evaluate import EvaluateConfig, evaluate
from iass.evaluation.separate import SeparationConfig
from iass.pipelines.corpus_format import Corpus


def reference_f1(tracks, th, size):
    """F1 of the applied decision written out with scipy's medfilt (not the code under test)."""
    tp = fp = fn = 0
    for prob, truth in tracks:
        d = medfilt((prob >= th).astype(float), size) > 0.5
        for di, ti in zip(d, truth):
            if np.isnan(ti):
                continue
            tp += di and ti == 1
            fp += di and ti == 0
            fn += (not di) and ti == 1
    return 2 * tp / (2 * tp + fp + fn)


def test_best_threshold_is_the_grids_best_f1():
    rng = np.random.default_rng(0)
    tracks = []
    for n in (300, 420, 250):
        truth = (np.sin(np.arange(n) / rng.uniform(8, 30)) > 0).astype(np.float32)
        prob = np.clip(0.25 * truth + rng.uniform(0, 0.45, n), 0, 1)     # under-confident
        truth[rng.uniform(size=n) < 0.1] = np.nan                        # unknown frames skipped
        tracks.append((prob, truth))
    th, f1 = best_threshold(tracks, 9)
    ref = {g: reference_f1(tracks, g, 9) for g in GRID}
    assert f1 == pytest.approx(max(ref.values()))
    assert ref[th] == pytest.approx(f1) and th < 0.5      # 0.5 misses most active frames here
    assert reference_f1(tracks, 0.5, 9) < f1 - 0.2


def test_ties_go_to_the_threshold_nearest_one_half_and_silence_is_not_tuned():
    truth = np.repeat([0.0, 1.0, 0.0, 1.0], 50)
    prob = np.where(truth > 0, 0.3, 0.1)
    th, f1 = best_threshold([(prob, truth)], 5)
    assert (th, f1) == (0.3, 1.0)           # every threshold in (0.1, 0.3] is perfect
    th, f1 = best_threshold([(prob, np.zeros_like(truth))], 5)
    assert th == 0.5 and np.isnan(f1)


class ShyBandSeparator(BandSeparator):
    """The fixture's separator with its activity logits pulled down: under-confident, so the
    default 0.5 misses frames where targets play."""

    def masks(self, mixture_mag):
        mask, logits = super().masks(mixture_mag)
        return mask, logits - 2.0


def test_evaluate_tunes_on_the_valid_split_and_applies_the_thresholds(tmp_path):
    root = tmp_path / "corpus"
    write_eval_corpus(root)
    sep = ShyBandSeparator()
    tuned = tune_thresholds(Corpus(root), sep, "valid", SeparationConfig(weighting="hard"),
                            progress=False, metric="f1")
    assert set(tuned) == set(sep.targets) and all(v["tracks"] == 1 for v in tuned.values())
    assert any(v["threshold"] < 0.5 for v in tuned.values())

    config = EvaluateConfig(separation=SeparationConfig(weighting="hard"), workers=1,
                            threshold_split="valid", threshold_metric="f1")
    metrics = evaluate(root, [sep], tmp_path / "tuned", config, progress=False)
    assert metrics["thresholds"] == {"band": {t: v["threshold"] for t, v in tuned.items()}}
    assert "tuned on the `valid` split" in (tmp_path / "tuned" / "summary.md").read_text()
    # the same as evaluating with those thresholds given explicitly
    explicit = EvaluateConfig(separation=SeparationConfig(
        weighting="hard", threshold=tuple(tuned[t]["threshold"] for t in sep.targets)), workers=1)
    evaluate(root, [sep], tmp_path / "explicit", explicit, progress=False)
    a = pl.read_parquet(tmp_path / "tuned" / "results.parquet")
    b = pl.read_parquet(tmp_path / "explicit" / "results.parquet")
    assert a.equals(b)
    plain = json.loads((tmp_path / "explicit" / "metrics.json").read_text())
    assert plain["thresholds"] == {}
    with pytest.raises(ConfigError, match="split being scored"):
        evaluate(root, [sep], tmp_path / "bad", EvaluateConfig(threshold_split="test"), progress=False)


# ------------------------------------------------------------ the gate that separates best (sdr)
def test_gate_energies_are_the_stft_errors_of_the_open_and_closed_gate(tmp_path):
    """Chunked (0.5 s chunks) == the whole track's torch.stft, mask and reference at once."""
    import torch

    root = tmp_path / "corpus"
    write_eval_corpus(root)
    corpus, sep = Corpus(root), BandSeparator()
    (tid,) = corpus.track_ids(split="valid")
    got = gate_energies(corpus, sep, tid, SeparationConfig(chunk_seconds=0.5))
    mix = torch.from_numpy(corpus.read_mixture(tid).T.copy())
    window = torch.hann_window(sep.n_fft)
    X = torch.stft(mix, sep.n_fft, sep.hop, window=window, return_complex=True)
    mask, logits = sep.masks(X.abs())
    assert set(got) == set(sep.targets)
    for k, t in enumerate(sep.targets):
        ref = torch.from_numpy(corpus.read_target(tid, t).T.copy())
        S = torch.stft(ref, sep.n_fft, sep.hop, window=window, return_complex=True)
        prob, ref_e, est_e, cross = got[t]
        np.testing.assert_allclose(prob, torch.sigmoid(logits[k]).numpy(), rtol=1e-5, atol=1e-6)
        E = mask[k] * X
        scale = float((S.abs() ** 2 + E.abs() ** 2).sum((0, 1)).max()) + 1e-12
        np.testing.assert_allclose(ref_e, (S.abs() ** 2).sum((0, 1)).numpy(), atol=1e-5 * scale)
        np.testing.assert_allclose(est_e, (E.abs() ** 2).sum((0, 1)).numpy(), atol=1e-5 * scale)
        # the error of the open gate follows from the three
        np.testing.assert_allclose(est_e - 2 * cross + ref_e,
                                   ((S - E).abs() ** 2).sum((0, 1)).numpy(), atol=1e-5 * scale)


def _gated_sdr(S, est, prob, th, size, w):
    """Median windowed SDR of the gated estimate (one track), on the spectrograms themselves."""
    d = np.ones(len(prob), bool) if th == 0 else medfilt((prob >= th).astype(float), size) > 0.5
    gated = est * d[None, :]
    out = []
    for s in range(0, S.shape[1], w):
        ref = np.sum(np.abs(S[:, s: s + w]) ** 2)
        if ref > 0:
            out.append(10 * np.log10(ref / np.sum(np.abs(S[:, s: s + w] - gated[:, s: s + w]) ** 2)))
    return np.median(out)


def _spectra(rng, n=400, bins=16):
    """A target that plays 40 % of the frames and an estimate with leakage everywhere."""
    truth = (np.sin(np.arange(n) / 9.0) > 0.3)
    S = (rng.normal(size=(bins, n)) + 1j * rng.normal(size=(bins, n))) * truth
    leak = 0.3 * (rng.normal(size=(bins, n)) + 1j * rng.normal(size=(bins, n)))
    est = S * rng.uniform(0.7, 1.1, size=(bins, n)) + leak          # leakage everywhere
    return truth, S, est


def _energies(S, est):
    return (np.sum(np.abs(S) ** 2, 0), np.sum(np.abs(est) ** 2, 0),
            np.sum((np.conj(S) * est).real, 0))


def test_gate_score_is_the_windowed_sdr_of_the_gated_estimate():
    rng = np.random.default_rng(1)
    truth, S, est = _spectra(rng)
    prob = np.clip(0.6 * truth + rng.uniform(0, 0.5, len(truth)), 0, 1)
    energies = _energies(S, est)
    for th in (OPEN, 0.3, 0.55, 0.8):
        assert gate_score([(prob, *energies)], th, 7, 25) == pytest.approx(
            _gated_sdr(S, est, prob, th, 7, 25), rel=1e-9)
    # several tracks: the median over tracks of each track's median, as the report aggregates
    tracks = [_spectra(rng, n) for n in (300, 410, 520)]
    probs = [np.clip(0.6 * t + rng.uniform(0, 0.5, len(t)), 0, 1) for t, _, _ in tracks]
    got = gate_score([(p, *_energies(S, e)) for p, (_, S, e) in zip(probs, tracks)], 0.5, 7, 25)
    assert got == pytest.approx(np.median([_gated_sdr(S, e, p, 0.5, 7, 25)
                                           for p, (_, S, e) in zip(probs, tracks)]), rel=1e-9)


def test_the_gate_closes_silences_when_the_detector_is_good_and_stays_open_when_it_is_not():
    rng = np.random.default_rng(2)
    truth, S, est = _spectra(rng)
    energies = _energies(S, est)
    good = np.clip(0.7 * truth + rng.uniform(0, 0.25, len(truth)), 0, 1)
    th, score, gain = best_gate([(good, *energies)], 5, 25)
    assert 0.25 < th <= 0.7 and gain > 1.0            # silences muted: the leakage there is gone
    assert score == pytest.approx(_gated_sdr(S, est, good, th, 5, 25))
    assert score >= max(_gated_sdr(S, est, good, g, 5, 25) for g in (0,) + GRID) - TIE_DB
    # a gain within the tolerance is a tie, and a tie keeps the gate open
    assert best_gate([(good, *energies)], 5, 25, tolerance_db=gain + 0.01)[0] == OPEN
    # a detector that misses where the target plays: every gate costs more than it saves
    deaf = np.where(truth, 0.02, 0.9) + rng.uniform(0, 0.05, len(truth))
    assert best_gate([(deaf, *energies)], 5, 25) == (OPEN, pytest.approx(
        _gated_sdr(S, est, deaf, 0, 5, 25)), 0.0)
    # never sounds: nothing to tune on, not weighted
    th, score, gain = best_gate([(good, np.zeros_like(energies[0]), *energies[1:])], 5, 25)
    assert th == OPEN and np.isnan(score) and gain == 0.0


def test_safe_ties_go_to_the_gate_nearest_the_papers_and_the_open_gate_comes_last():
    rng = np.random.default_rng(3)
    truth, S, est = _spectra(rng)
    energies = _energies(S, est)
    # leakage-free estimate where the target is silent: every gate that does not mute what plays
    # ties with the open gate, so "sdr" keeps it open and "safe" takes the paper's 0.5
    clean = np.where(truth[None, :], est, 0)
    flat = _energies(S, clean)
    good = np.clip(0.7 * truth + rng.uniform(0, 0.25, len(truth)), 0, 1)
    scores = {g: _gated_sdr(S, clean, good, g, 5, 25) for g in (0,) + GRID}
    assert abs(scores[0.5] - scores[0]) < 1e-9              # a tie by construction
    assert best_gate([(good, *flat)], 5, 25)[0] == OPEN
    th, score, gain = best_gate([(good, *flat)], 5, 25, prefer="paper")
    assert th == 0.5 and score == pytest.approx(scores[0.5]) and abs(gain) < 1e-9
    # a detector that reaches 0.5 only on part of what plays (a sparse target's under-confident
    # head): 0.5 costs; "safe" takes the nearest threshold that does not, never one that costs
    shy = np.where(truth, rng.uniform(0.2, 0.6, len(truth)), rng.uniform(0.0, 0.1, len(truth)))
    th, score, _ = best_gate([(shy, *energies)], 5, 25, prefer="paper")
    all_scores = {g: _gated_sdr(S, est, shy, g, 5, 25) for g in (0,) + GRID}
    top = max(all_scores.values())
    assert all_scores[0.5] < top - TIE_DB                   # the paper's gate would cost here
    assert OPEN < th < 0.5 and score >= top - TIE_DB
    assert all(all_scores[g] < top - TIE_DB for g in GRID if abs(g - 0.5) < abs(th - 0.5))
    # every gate costs (a deaf detector): no weighting either way
    deaf = np.where(truth, 0.02, 0.9) + rng.uniform(0, 0.05, len(truth))
    assert best_gate([(deaf, *energies)], 5, 25, prefer="paper")[0] == OPEN
    with pytest.raises(ValueError, match="prefer"):
        best_gate([(good, *energies)], 5, 25, prefer="closed")


def test_evaluate_tunes_gates_by_sdr_on_the_valid_split(tmp_path):
    root = tmp_path / "corpus"
    write_eval_corpus(root)
    sep = ShyBandSeparator()
    tuned = tune_thresholds(Corpus(root), sep, "valid", SeparationConfig(weighting="hard"),
                            progress=False)
    assert {v["metric"] for v in tuned.values()} == {"sdr"}
    assert all(v["gain_db"] >= 0 for v in tuned.values())
    config = EvaluateConfig(separation=SeparationConfig(weighting="hard"), workers=1,
                            threshold_split="valid")
    metrics = evaluate(root, [sep], tmp_path / "sdr", config, progress=False)
    assert metrics["thresholds"] == {"band": {t: v["threshold"] for t, v in tuned.items()}}
    assert "the gate that separates best" in (tmp_path / "sdr" / "summary.md").read_text()
    # "safe": the same scores, ties to the gate nearest 0.5; it never gains less than "sdr" chose
    safe = tune_thresholds(Corpus(root), sep, "valid", SeparationConfig(weighting="hard"),
                           progress=False, metric="safe")
    assert {v["metric"] for v in safe.values()} == {"safe"}
    for t in tuned:
        assert safe[t]["gain_db"] >= tuned[t]["gain_db"] - TIE_DB
        assert abs(safe[t]["threshold"] - 0.5) <= abs(tuned[t]["threshold"] - 0.5) or \
            tuned[t]["threshold"] == OPEN
    config = replace(config, threshold_metric="safe")
    metrics = evaluate(root, [sep], tmp_path / "safe", config, progress=False)
    assert metrics["thresholds"] == {"band": {t: v["threshold"] for t, v in safe.items()}}
    summary = (tmp_path / "safe" / "summary.md").read_text()
    assert "nearest 0.5" in summary and "(threshold tuned per target, below" in summary
    with pytest.raises(ConfigError, match="threshold metric"):
        tune_thresholds(Corpus(root), sep, "valid", SeparationConfig(), progress=False, metric="auc")
