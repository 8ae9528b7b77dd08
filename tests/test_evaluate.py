"""`iass evaluate` on a tiny corpus in the real format: references in the right order, the
report files, activity scores against the fixture's exact labels, and real trained runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from scipy.signal import medfilt

from _separate_reference import separate_oneshot
from corpus_fixtures import BandSeparator, frame_labels, write_eval_corpus
from iass.evaluation.evaluate import EvaluateConfig, evaluate
from iass.evaluation.separate import SeparationConfig
from iass.pipelines.corpus_format import Corpus

TARGETS = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]
METHODS = ["IASS (weighted)", "IASS (unweighted)", "IBM", "input-SDR"]


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory):
    """A folder shared by the xdist workers of this session (the parent of their basetemps)."""
    import os

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return root / "iass-evaluate-fixture"


def _once(folder, build):
    """Run ``build(folder)`` once per session across xdist workers (file lock + done marker):
    the evaluation is the expensive part and every test here reads the same result."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".done").exists():
            build(folder)
            (folder / ".done").write_text("ok")
    return folder


@pytest.fixture(scope="session")
def corpus_dir(shared_dir):
    from corpus_fixtures import default_eval_tracks as default_tracks

    root = _once(shared_dir / "corpus", lambda d: write_eval_corpus(d))
    corpus = Corpus(root)
    by_native = {t.native_id: t for t in default_tracks()}
    truth = {tid: by_native[corpus.track(tid)["native_id"]] for tid in corpus.track_ids()}
    return root, truth


@pytest.fixture(scope="session")
def report(corpus_dir, shared_dir):
    root, _ = corpus_dir
    config = EvaluateConfig(separation=SeparationConfig(weighting="hard"), workers=2)
    out = _once(shared_dir / "report",
                lambda d: evaluate(root, [BandSeparator()], d, config, progress=False))
    return out, json.loads((out / "metrics.json").read_text())


def test_results_rows_cover_known_sounding_targets_only(corpus_dir, report):
    root, truth = corpus_dir
    out, _ = report
    df = pl.read_parquet(out / "results.parquet")
    assert df.columns == ["track_id", "source", "target", "method", "run", "metric", "value"]
    corpus = Corpus(root)
    expected = set()
    for tid in corpus.track_ids("test"):
        tr = truth[tid]
        for target in TARGETS:
            known = target not in ("electric_guitar", "acoustic_guitar", "piano") or not tr.unknown
            sounding = any(corpus.taxonomy.covers(target, inst) for inst in tr.stems)
            if known and sounding:
                expected |= {(tid, target, m, metric) for m in METHODS for metric in ("SDR", "SIR", "SAR", "ISR")}
    bss = df.filter(pl.col("metric").is_in(["SDR", "SIR", "SAR", "ISR"]))
    got = {tuple(r) for r in bss.select("track_id", "target", "method", "metric").iter_rows()}
    assert got == expected
    assert bss.height == len(expected)                       # one row each
    # the MUSDB-like track never scores the instruments hidden in its `other`
    musdb = bss.filter(pl.col("source") == "musdb")
    assert set(musdb["target"]) == {"vocals", "drums", "bass"}


def test_silence_scores_cover_every_known_target(corpus_dir, report):
    """PES/EPS rows for every known target of a track, also one it never plays (where BSS Eval
    has nothing to score); hard weighting mutes leakage there, the mixture leaks everything."""
    from iass.evaluation.metrics import silence_scores

    root, truth = corpus_dir
    out, metrics = report
    corpus = Corpus(root)
    df = pl.read_parquet(out / "results.parquet")
    pes = df.filter(pl.col("metric") == "PES")
    expected = set()
    for tid in corpus.track_ids("test"):
        for target in TARGETS:
            if target not in ("electric_guitar", "acoustic_guitar", "piano") or not truth[tid].unknown:
                expected |= {(tid, target, m) for m in METHODS}
    assert {tuple(r) for r in pes.select("track_id", "target", "method").iter_rows()} == expected
    silent_somewhere = 0
    for tid in corpus.track_ids("test"):
        ref = corpus.read_target(tid, "vocals")
        mixture = corpus.read_mixture(tid)
        row = pes.filter((pl.col("track_id") == tid) & (pl.col("target") == "vocals"))
        value = dict(zip(row["method"], row["value"]))
        expect = silence_scores(ref, mixture, 44100, 44100)["PES"][0]
        if np.isnan(expect):
            assert np.isnan(value["input-SDR"])
        else:
            silent_somewhere += 1
            assert value["input-SDR"] == pytest.approx(expect, abs=1e-9)
    assert silent_somewhere >= 1
    with_silences = [t for t in TARGETS if metrics["pes"][t]["input_sdr"] is not None]
    assert {"vocals", "piano", "electric_guitar"} <= set(with_silences)   # drums, bass: never silent
    for target in with_silences:
        p = metrics["pes"][target]
        assert p["ibm"] <= p["iass_weighted"] <= p["iass_unweighted"] < p["input_sdr"], (target, p)
    assert any(metrics["pes"][t]["iass_weighted"] < metrics["pes"][t]["iass_unweighted"] - 10
               for t in with_silences)
    summary = (out / "summary.md").read_text()
    assert "## PES (dB, lower is better)" in summary and "## EPS (dB, lower is better)" in summary


def test_references_bracket_the_separator(report):
    """IBM > the separator > input-SDR, per target (median SDR over tracks)."""
    out, metrics = report
    for target in TARGETS:
        sdr = metrics["sdr"][target]
        assert sdr["ibm"] > sdr["iass_unweighted"] + 3, target
        assert sdr["iass_unweighted"] > sdr["input_sdr"] + 3, target
    summary = (out / "summary.md").read_text()
    for label in METHODS:
        assert label in summary
    for target in TARGETS:
        assert f"| {target} |" in summary
    assert "## SDR (dB)" in summary and "## Activity detection" in summary


def _ibm_by_museval(root, out, native_id: str, target: str):
    """The IBM estimate of ``target`` on one fixture track scored by museval itself on (target,
    rest): (track id, mixture, per-window SDR/ISR/SIR/SAR, the report's IBM row as {metric: value})."""
    from iass.evaluation.museval_ref import import_museval
    from iass.evaluation.references import ideal_binary_mask

    corpus = Corpus(root)
    tid = next(t for t in corpus.track_ids("test") if corpus.track(t)["native_id"] == native_id)
    mixture = corpus.read_mixture(tid)
    ref = corpus.read_target(tid, target)
    est = ideal_binary_mask(lambda s, c: mixture[s: s + c], [lambda s, c: ref[s: s + c]], len(mixture))[0]
    scores = import_museval().evaluate(np.stack([ref, mixture - ref]), np.stack([est, mixture - est]))
    df = pl.read_parquet(out / "results.parquet").filter(
        (pl.col("track_id") == tid) & (pl.col("target") == target) & (pl.col("method") == "IBM"))
    return tid, mixture, scores, dict(zip(df["metric"], df["value"]))


def test_one_score_against_museval(corpus_dir, report):
    """One (track, target, method) row recomputed independently: the IBM estimate scored by
    museval itself on (target, rest)."""
    root, _ = corpus_dir
    out, _ = report
    _, _, (sdr, _isr, sir, sar), value = _ibm_by_museval(root, out, "test-b", "piano")
    assert value["SDR"] == pytest.approx(np.nanmedian(sdr[0]), abs=0.1)
    assert value["SIR"] == pytest.approx(np.nanmedian(sir[0]), abs=0.1)
    assert value["SAR"] == pytest.approx(np.nanmedian(sar[0]), abs=0.1)


def test_sdr_by_window_class_against_museval(corpus_dir, report):
    """SDR_partial / SDR_active of one (track, target, IBM) row recomputed independently: museval's
    per-window SDR, the windows classed by the fixture's own region labels."""
    root, truth = corpus_dir
    out, metrics = report
    tid, mixture, scores, value = _ibm_by_museval(root, out, "test-a", "electric_guitar")
    sdr = scores[0][0]
    labels = frame_labels(truth[tid].stems["electric_guitar"], len(mixture), 1024)
    # guitar plays from 1.5 s to the end of the 3 s track: window 1 is partly silent, window 2 active
    share = [labels[(np.arange(len(labels)) * 1024 >= w * 44100)
                    & (np.arange(len(labels)) * 1024 < (w + 1) * 44100)].mean() for w in range(len(sdr))]
    assert share[0] == 0 and 0 < share[1] < 1 and share[2] == 1
    assert value["SDR_partial"] == pytest.approx(sdr[1], abs=0.1)
    assert value["SDR_active"] == pytest.approx(sdr[2], abs=0.1)
    assert value["windows_partial"] == 1 and value["windows_active"] == 1
    # a target without labels in the corpus (MUSDB's guitars) has no such rows; the report's table
    # and metrics.json carry the medians
    musdb = pl.read_parquet(out / "results.parquet").filter(pl.col("source") == "musdb")
    assert "SDR_partial" in set(musdb.filter(pl.col("target") == "vocals")["metric"])
    assert set(musdb["target"]) == {"vocals", "drums", "bass"}
    summary = (out / "summary.md").read_text()
    assert "## SDR where the gate can act (dB, partly silent / active windows)" in summary
    assert set(metrics["sdr_partial"]["electric_guitar"]) == {"iass_weighted", "iass_unweighted",
                                                               "ibm", "input_sdr"}


def test_oracle_gate_method(corpus_dir, shared_dir, report):
    """evaluate.oracle_gate: the run gated by the corpus labels is one more method, on the same
    rows as the unweighted one; it mutes silences (PES) like a perfect detector would (the gating
    itself: test_separate.py), and the other methods' scores do not change."""
    root, _ = corpus_dir
    _, base = report
    config = EvaluateConfig(separation=SeparationConfig(weighting="hard"), workers=2, oracle_gate=True)
    out = _once(shared_dir / "report-oracle",
                lambda d: evaluate(root, [BandSeparator()], d, config, progress=False))
    metrics = json.loads((out / "metrics.json").read_text())
    df = pl.read_parquet(out / "results.parquet")
    keys = lambda m: {tuple(r) for r in df.filter(pl.col("method") == m)
                      .select("track_id", "target", "metric").iter_rows()}
    assert keys("IASS (oracle gate)") == keys("IASS (unweighted)")
    with_silences = [t for t in TARGETS if metrics["pes"][t]["input_sdr"] is not None]
    for t in with_silences:
        assert metrics["pes"][t]["iass_oracle_gate"] < metrics["pes"][t]["iass_unweighted"] - 10, t
    # the other methods score as without the extra column (same estimates, same windows)
    for t in TARGETS:
        for key in ("iass_weighted", "iass_unweighted", "ibm", "input_sdr"):
            assert metrics["sdr"][t][key] == pytest.approx(base["sdr"][t][key], abs=1e-9), (t, key)
    assert "`(oracle gate)`" in (out / "summary.md").read_text()


def test_activity_scores_against_exact_labels(corpus_dir, report):
    """Pooled F1 recomputed from the fixture's own region labels (not the corpus reader) and
    the one-shot separator's decisions."""
    root, truth = corpus_dir
    out, metrics = report
    corpus = Corpus(root)
    sep = BandSeparator()
    for target in ("vocals", "piano"):
        tp = fp = fn = 0
        for tid in corpus.track_ids("test"):
            tr = truth[tid]
            if target == "piano" and tr.unknown:
                continue
            n = tr.num_samples
            regions = [r for inst, rs in tr.stems.items() if corpus.taxonomy.covers(target, inst) for r in rs]
            labels = frame_labels(regions, n, 1024) > 0.5
            res = separate_oneshot(corpus.read_mixture(tid), sep, SeparationConfig(weighting="hard"))
            k = sep.targets.index(target)
            raw = (res.probability[k] >= 0.5).astype(float)
            dec = medfilt(raw, 21) > 0.5
            tp += int(np.sum(dec & labels))
            fp += int(np.sum(dec & ~labels))
            fn += int(np.sum(~dec & labels))
        f1 = 2 * tp / (2 * tp + fp + fn)
        assert metrics["activity"][target]["band"]["f1"] == pytest.approx(f1, abs=1e-9)
    act = pl.read_parquet(out / "activity.parquet")
    assert set(act["target"]) == set(TARGETS)


def test_report_files(report):
    out, metrics = report
    assert metrics["tracks"] == 4
    assert set(metrics["sdr"]["vocals"]) == {"iass_weighted", "iass_unweighted", "ibm", "input_sdr"}
    # metrics.json's medians == the median over tracks of results.parquet, recomputed here
    df = pl.read_parquet(out / "results.parquet").filter(pl.col("metric") == "SDR")
    medians = df.group_by("target", "method").agg(pl.col("value").median())
    keys = {"IASS (weighted)": "iass_weighted", "IASS (unweighted)": "iass_unweighted",
            "IBM": "ibm", "input-SDR": "input_sdr"}
    for target, method, value in medians.iter_rows():
        assert metrics["sdr"][target][keys[method]] == pytest.approx(value, abs=1e-9)
    import matplotlib.image as mpimg

    png = mpimg.imread(out / "sdr_boxplot.png")
    assert png.ndim == 3 and png.shape[0] > 200 and png.shape[1] > 400
    res = subprocess.run([sys.executable, "-m", "iass.cli", "report", "show", str(out)],
                         capture_output=True, text=True, check=True)
    assert res.stdout == (out / "summary.md").read_text()


def test_seeds_report_of_real_reports(report, tmp_path):
    """`iass report seeds` over this report and a copy whose weighted IASS is 1 dB better: each
    report's medians are its metrics.json's; the paired difference moves by the mean shift."""
    from iass.evaluation.seeds import write_seeds_report

    out, metrics = report
    df = pl.read_parquet(out / "results.parquet")
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    df.with_columns(pl.when((pl.col("method") == "IASS (weighted)") & (pl.col("metric") == "SDR"))
                    .then(pl.col("value") + 1.0).otherwise(pl.col("value")).alias("value")
                    ).write_parquet(shifted / "results.parquet")
    agg = write_seeds_report([f"a={out}", f"b={shifted}"], tmp_path / "seeds")
    keys = {"IASS (weighted)": "iass_weighted", "IASS (unweighted)": "iass_unweighted",
            "IBM": "ibm", "input-SDR": "input_sdr"}
    assert agg["methods"] == list(keys)
    for target in agg["targets"] + ["all"]:
        for method, key in keys.items():
            assert agg["median_sdr"][target][method]["a"] == pytest.approx(metrics["sdr"][target][key])
        b = agg["median_sdr"][target]["IASS (weighted)"]["b"]
        assert b == pytest.approx(metrics["sdr"][target]["iass_weighted"] + 1.0)
    sdr = df.filter(pl.col("metric") == "SDR")
    wide = sdr.pivot(on="method", index=["track_id", "target"], values="value")
    diff = (wide["IASS (weighted)"] - wide["IASS (unweighted)"]).to_numpy() + 0.5
    row = next(c for c in agg["comparisons"] if c["b"] == "IASS (unweighted)")["targets"]["all"]
    assert row["tracks"] == len(diff) and row["median_diff"] == pytest.approx(np.median(diff))


def test_cli_errors_are_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "iass.cli", "report", "show", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "no evaluation summary" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ real trained runs (slow)
def _iass(*args, cwd=None, timeout=300):
    res = subprocess.run([sys.executable, "-m", "iass.cli", *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_end_to_end_with_trained_runs(tmp_path):
    """Tiny IASS and Open-Unmix runs trained by `iass train` on the fixture (hop 256), then
    `iass evaluate` with both and `iass separate` on an MP3 and a WAV."""
    corpus = tmp_path / "corpus"
    write_eval_corpus(corpus, hop=256)
    common = ["-S", "stft.hop=256", "-S", "train.chunk_seconds=1.0", "-S", "train.batch_size=2",
              "-S", "train.steps_per_epoch=2", "-S", "train.workers=0", "-S", "train.stats_examples=4",
              "--max-steps", "2", "--device", "cpu", "--quiet"]
    _iass("train", "--model", "iass", "--corpus", corpus, "--run-dir", tmp_path / "iass",
          "-S", "model.iass.preset=tiny", *common)
    _iass("train", "--model", "umx", "--corpus", corpus, "--run-dir", tmp_path / "umx",
          "-S", "stft.n_fft=512", "-S", "model.umx.hidden_size=8", *common)
    out = tmp_path / "report"
    _iass("evaluate", "--corpus", corpus, "--run", tmp_path / "iass", "--run", tmp_path / "umx",
          "--out", out, "--workers", "2", "--quiet")
    summary = (out / "summary.md").read_text()
    for label in ("IASS (weighted)", "IASS (unweighted)", "Open-Unmix", "IBM", "input-SDR"):
        assert f" {label} |" in summary
    df = pl.read_parquet(out / "results.parquet")
    assert set(df["method"]) >= {"IASS (weighted)", "IASS (unweighted)", "Open-Unmix", "IBM", "input-SDR", "IASS"}
    # the IBM on the models' STFT is still far above the mixture
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sdr"]["all"]["ibm"] > metrics["sdr"]["all"]["input_sdr"] + 10

    # `iass separate` on a real WAV and MP3 (a mixture of the corpus, re-encoded)
    tid = Corpus(corpus).track_ids("test")[0]
    mixture = Corpus(corpus).read_mixture(tid)

    # the real network, chunked (0.5 s chunks) == one shot: its receptive field fits the context
    from iass.evaluation.separate import separate
    from iass.training.inference import load_separator

    net = load_separator(tmp_path / "iass")
    cfg = SeparationConfig(weighting="hard", chunk_seconds=0.5)
    chunked, oneshot = separate(mixture, net, cfg), separate_oneshot(mixture, net, cfg)
    np.testing.assert_allclose(chunked.estimates, oneshot.estimates,
                               atol=1e-4 * max(np.abs(oneshot.estimates).max(), 1e-3))
    np.testing.assert_array_equal(chunked.decision, oneshot.decision)
    wav, mp3 = tmp_path / "mix.wav", tmp_path / "mix.mp3"
    sf.write(wav, mixture, 44100, subtype="PCM_16")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(wav), "-b:a", "192k", str(mp3)], check=True)
    for path in (wav, mp3):
        dest = tmp_path / f"sep-{path.suffix[1:]}"
        res = _iass("separate", path, "--run", tmp_path / "iass", "--out", dest)
        assert "separated" in res.stdout
        for target in TARGETS:
            audio, rate = sf.read(dest / f"{target}.wav", always_2d=True)
            assert rate == 44100 and audio.shape[1] == 2
            assert abs(len(audio) - len(mixture)) < 4096       # MP3 adds a little padding
        table = pl.read_parquet(dest / "activity.parquet")
        assert table.height == len(audio) // 256 + 1
        assert (dest / "activity.csv").read_text().startswith("frame,time_s,vocals_probability")
