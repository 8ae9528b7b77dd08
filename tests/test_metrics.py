"""BSS Eval v4 against museval (the reference), and the activity detection scores."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from iass.evaluation.metrics import (
    _cross_correlations, activity_scores, bss_eval_v4, roc_auc, score_target, window_bounds,
)
from iass.evaluation.museval_ref import import_museval

SR = 44100


@pytest.fixture(scope="module")
def museval():
    return import_museval()


def _sources(seconds: float, n_src: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """References with different spectra and a silent second for source 1; estimates that mix
    the references (interference), filter them (spatial distortion) and add noise (artifacts)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    refs = np.zeros((n_src, n, 2))
    for j in range(n_src):
        white = rng.standard_normal((n, 2))
        refs[j] = lfilter([1.0], [1.0, -0.9 + 0.4 * j], white, axis=0)
        refs[j, :, 1] = 0.7 * refs[j, :, 1] + 0.3 * refs[j, :, 0]
    refs[1, SR: 2 * SR] = 0.0          # a silent window: museval drops it for every source
    mixing = 0.25 * rng.uniform(size=(n_src, n_src)) + np.eye(n_src)
    est = np.einsum("ij,jnc->inc", mixing, refs) + 0.05 * rng.standard_normal(refs.shape)
    est = lfilter([1.0, 0.4, -0.2], [1.0], est, axis=1)
    return refs.astype(np.float32), est.astype(np.float32)


def test_window_bounds_are_museval_framing(museval):
    for n, win, hop in [(3 * SR + 17, SR, SR), (SR // 2, SR, SR), (5 * SR, SR, SR // 2), (SR, SR, SR)]:
        framer = museval.metrics.Framing(win, hop, n)
        expected = [(s.start, s.stop) for s in framer]
        assert window_bounds(n, win, hop) == expected


def test_cross_correlations_are_linear_correlations():
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal((2, 5_000)), rng.standard_normal((3, 5_000))
    got = _cross_correlations(left, right, max_lag=40, n_fft=1 << 10, group=3)
    for p in range(2):
        for q in range(3):
            full = np.correlate(left[p], right[q], mode="full")   # lag k at index k + n - 1
            mid = len(right[q]) - 1
            np.testing.assert_allclose(got[p, q], full[mid - 40: mid + 41], rtol=1e-9, atol=1e-8)


def test_agrees_with_museval_evaluate_per_window(museval):
    refs, est = _sources(3.5, 3, seed=0)
    expected = museval.evaluate(refs, est, win=SR, hop=SR)            # SDR, ISR, SIR, SAR
    got = bss_eval_v4(refs, est, win=SR, hop=SR)
    for name, exp, ours in zip(("SDR", "ISR", "SIR", "SAR"), expected, (got.sdr, got.isr, got.sir, got.sar)):
        assert exp.shape == ours.shape == (3, 3), name
        np.testing.assert_array_equal(np.isnan(exp), np.isnan(ours))
        assert np.isnan(ours[:, 1]).all()                              # the silent window
        np.testing.assert_allclose(ours[~np.isnan(ours)], exp[~np.isnan(exp)], atol=1e-6, err_msg=name)
    # the track score (median over windows) within 0.1 dB, as required; in fact ~1e-9 dB
    ours = got.medians()
    for name, exp in zip(("SDR", "ISR", "SIR", "SAR"), expected):
        np.testing.assert_allclose(ours[name], np.nanmedian(exp, axis=1), atol=0.1)


def test_target_vs_rest_agrees_with_museval(museval):
    """The evaluation's convention (target, rest of the mixture) is museval on those two."""
    refs, est = _sources(4.2, 4, seed=3)
    mixture = refs.sum(0)
    target, rest = refs[2], mixture - refs[2]
    estimate = est[2]
    expected = museval.evaluate(np.stack([target, rest]), np.stack([estimate, mixture - estimate]))
    got = score_target(target, rest, estimate, silent_estimates="nan")
    for exp, ours in zip(expected, (got.sdr, got.isr, got.sir, got.sar)):
        np.testing.assert_allclose(ours[0], exp[0], atol=1e-6)
    # several estimates of one target at once == one at a time
    both = score_target(target, rest, np.stack([estimate, mixture]))
    alone = score_target(target, rest, mixture)
    np.testing.assert_allclose(both.sdr[1], alone.sdr[0], atol=1e-9)
    np.testing.assert_allclose(both.sar[0], got.sar[0], atol=1e-9)


def test_silent_estimate_windows(museval):
    """museval drops windows where an estimate is silent; 'score' scores them (SDR = 0 dB)."""
    refs, est = _sources(3.0, 2, seed=5)
    refs[1, SR: 2 * SR] = refs[0, SR: 2 * SR]      # no silent reference window this time
    est[0, 2 * SR:] = 0.0
    expected = museval.evaluate(refs, est)
    museval_like = bss_eval_v4(refs, est, silent_estimates="nan")
    np.testing.assert_allclose(museval_like.sdr, expected[0], atol=1e-6)
    assert np.isnan(museval_like.sdr[:, 2]).all()
    scored = bss_eval_v4(refs, est, silent_estimates="score")
    assert scored.sdr[0, 2] == pytest.approx(0.0, abs=1e-9)        # |s|^2 / |0 - s|^2
    np.testing.assert_allclose(scored.sdr[:, :2], expected[0][:, :2], atol=1e-6)


def test_agrees_with_museval_on_separated_audio(museval, tmp_path):
    """A realistic case: estimates of the evaluation fixture's band separator, per target."""
    from corpus_fixtures import BandSeparator, write_eval_corpus
    from corpus_fixtures import default_eval_tracks as default_tracks
    from iass.evaluation.separate import SeparationConfig, separate
    from iass.pipelines.corpus_format import Corpus

    write_eval_corpus(tmp_path / "corpus", [t for t in default_tracks() if t.native_id == "test-a"])
    corpus = Corpus(tmp_path / "corpus")
    tid = next(t for t in corpus.track_ids("test") if corpus.track(t)["native_id"] == "test-a")
    mixture = corpus.read_mixture(tid)
    sep = BandSeparator(targets=["vocals", "piano"])
    est = separate(mixture, sep, SeparationConfig(weighting="hard")).estimates
    for k, target in enumerate(sep.targets):
        ref = corpus.read_target(tid, target)
        expected = museval.evaluate(np.stack([ref, mixture - ref]), np.stack([est[k], mixture - est[k]]))
        got = score_target(ref, mixture - ref, est[k], silent_estimates="nan").medians()
        for name, exp in zip(("SDR", "ISR", "SIR", "SAR"), expected):
            assert abs(got[name][0] - np.nanmedian(exp[0])) < 0.1, (target, name)


def test_activity_scores_count_frames_and_skip_unknown():
    prob = np.array([0.9, 0.8, 0.2, 0.6, 0.1, 0.7, 0.3])
    decision = prob >= 0.5
    truth = np.array([1, 0, 1, 1, 0, np.nan, np.nan])
    s = activity_scores(prob, decision, truth)
    assert (s["tp"], s["fp"], s["fn"], s["tn"], s["frames"]) == (2, 1, 1, 1, 5)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    # AUC by brute force over (positive, negative) pairs of the known frames
    p, t = prob[:5], truth[:5] > 0.5
    pairs = [(a > b) + 0.5 * (a == b) for a in p[t] for b in p[~t]]
    assert s["auc"] == pytest.approx(np.mean(pairs))


def test_roc_auc_ties_and_one_class():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 4, 200).astype(float)       # many ties
    truth = rng.uniform(size=200) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in score[truth] for b in score[~truth]]
    assert roc_auc(score, truth) == pytest.approx(np.mean(pairs))
    assert np.isnan(roc_auc(score, np.ones(200, bool)))


def _pes_eps_by_the_paper(true_source, prediction, win, hop):
    """Schulze-Forster et al. (2019), written out window by window for one channel-summed
    energy: PES over windows where the truth is silent, EPS where the prediction is."""
    pes, eps = [], []
    for a, b in window_bounds(len(true_source), win, hop):
        t, p = true_source[a:b], prediction[a:b]
        if np.sum(np.abs(t)) == 0:
            pes.append(10 * np.log10(np.sum(p.astype(np.float64) ** 2) + 1e-12))
        if np.sum(np.abs(p)) == 0 and np.sum(np.abs(t)) != 0:
            eps.append(10 * np.log10(np.sum(t.astype(np.float64) ** 2) + 1e-12))
    return (np.mean(pes) if pes else np.nan), (np.mean(eps) if eps else np.nan)


def test_silence_scores_follow_the_published_definition():
    from iass.evaluation.metrics import silence_scores

    rng = np.random.default_rng(3)
    n, win = 6 * 1000, 1000
    target = rng.normal(size=(n, 2)).astype(np.float32)
    target[1000:3000] = 0.0                        # silent in windows 1 and 2
    target[5500:] = 0.0                            # half a window: not silent
    leaky = target + 0.1 * rng.normal(size=(n, 2)).astype(np.float32)
    muted = leaky.copy()
    muted[1000:2000] = 0.0                         # muted where the target is silent
    muted[3000:4000] = 0.0                         # ... and where it plays
    got = silence_scores(target, np.stack([leaky, muted, target]), win, win)
    for k, est in enumerate([leaky, muted, target]):
        pes, eps = _pes_eps_by_the_paper(target, est, win, win)
        np.testing.assert_allclose(got["PES"][k], pes, rtol=1e-12)
        if np.isnan(eps):
            assert np.isnan(got["EPS"][k])
        else:
            np.testing.assert_allclose(got["EPS"][k], eps, rtol=1e-12)
    # leakage: 0.1 x unit noise over 2 x 1000 samples -> 10 log10(20) = 13 dB
    assert abs(got["PES"][0] - 10 * np.log10(0.01 * 2 * 1000)) < 0.5
    # muting one of the two silent windows: (13 dB - 120 dB) / 2
    assert abs(got["PES"][1] - (10 * np.log10(20) - 120) / 2) < 0.5
    assert got["PES"][2] == -120.0                 # the truth leaks nothing
    assert np.isnan(got["EPS"][0])                 # never silent: no EPS
    # muted windows 1 (target silent: nothing lost, not counted) and 3 (target plays: ~33 dB)
    assert abs(got["EPS"][1] - 10 * np.log10(2 * 1000)) < 0.5
    assert np.isnan(got["EPS"][2])                 # silent only where the target is


def test_window_activity_counts_frames_by_centre():
    """Frame k (centred on sample k * hop) belongs to the window holding its centre."""
    from iass.evaluation.metrics import window_activity

    hop = 100
    truth = np.zeros(31)
    truth[5:15] = 1.0            # centres 500..1400
    truth[25] = np.nan           # unknown frames are left out
    bounds = window_bounds(3000, 1000, 1000)
    share = window_activity(truth, hop, bounds)
    # window 0: frames 0..9 (5 active); window 1: frames 10..19 (5 active); window 2: 20..29 minus 25
    np.testing.assert_allclose(share, [0.5, 0.5, 0.0])
    assert np.isnan(window_activity(np.full(31, np.nan), hop, bounds)).all()


def test_median_where_selects_windows():
    from iass.evaluation.metrics import BSSScores

    sdr = np.array([[1.0, 5.0, np.nan, 3.0], [2.0, 2.0, 2.0, np.nan]])
    scores = BSSScores(sdr, sdr, sdr, sdr, 10, 10)
    med, count = scores.median_where(np.array([True, True, True, False]))
    np.testing.assert_allclose(med, [3.0, 2.0])
    np.testing.assert_array_equal(count, [2, 3])
    med, count = scores.median_where(np.zeros(4, dtype=bool))
    assert np.isnan(med).all() and (count == 0).all()
