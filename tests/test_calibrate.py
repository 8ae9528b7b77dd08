"""Per-target activity thresholds tuned on a held-out split (evaluation/calibrate.py)."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy.signal import medfilt

from eval_corpus_fixture import BandSeparator, write_eval_corpus
from iass.evaluation.calibrate import GRID, best_threshold, tune_thresholds
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
    tuned = tune_thresholds(Corpus(root), sep, "valid", SeparationConfig(weighting="hard"), progress=False)
    assert set(tuned) == set(sep.targets) and all(v["tracks"] == 1 for v in tuned.values())
    assert any(v["threshold"] < 0.5 for v in tuned.values())

    config = EvaluateConfig(separation=SeparationConfig(weighting="hard"), workers=1,
                            threshold_split="valid")
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
    with pytest.raises(SystemExit, match="split being scored"):
        evaluate(root, [sep], tmp_path / "bad", EvaluateConfig(threshold_split="test"), progress=False)
