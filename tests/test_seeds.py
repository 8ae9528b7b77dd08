"""`iass report seeds`: several evaluation reports (one per training seed) read back from their
results.parquet; medians, counts and the paired Wilcoxon test checked by hand."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from iass.evaluation.report import RESULTS, results_frame
from iass.evaluation.seeds import load_reports, paired, write_seeds_report
from iass.io import atomic_write_parquet

METHODS = ["IASS (weighted)", "IASS (unweighted)", "Open-Unmix", "IBM", "input-SDR"]
TARGETS = ["vocals", "piano"]


def write_results(folder, sdr: dict, tracks: int = 8, extra_rows=()) -> None:
    """A report's results.parquet: sdr[(target, method)] -> one SDR per track (plus a SIR row
    per cell, which the seeds report must ignore)."""
    rows = []
    for (target, method), values in sdr.items():
        for i in range(tracks):
            base = {"track_id": f"t{i:02d}", "source": "synth", "target": target, "method": method,
                    "run": "iass" if method.startswith("IASS") else "umx"}
            rows.append({**base, "metric": "SDR", "value": float(values[i])})
            rows.append({**base, "metric": "SIR", "value": 99.0})
    rows += list(extra_rows)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(folder / RESULTS, results_frame([{"rows": rows}]))


def grid(rng, shift: dict | None = None, tracks: int = 8) -> dict:
    """SDRs with the expected order IBM > models > input; ``shift`` adds dB to a method."""
    base = {"IBM": 10.0, "IASS (weighted)": 4.0, "IASS (unweighted)": 3.8, "Open-Unmix": 3.0, "input-SDR": -5.0}
    out = {}
    for t in TARGETS:
        for m in METHODS:
            out[(t, m)] = base[m] + (shift or {}).get(m, 0.0) + rng.normal(0, 0.3, tracks)
    return out


@pytest.fixture
def three(tmp_path):
    rng = np.random.default_rng(0)
    grids = [grid(rng), grid(rng, {"Open-Unmix": 1.5}), grid(rng)]
    dirs = []
    for k, g in enumerate(grids):
        write_results(tmp_path / f"r{k}", g)
        dirs.append(tmp_path / f"r{k}")
    return dirs, grids


def test_medians_counts_and_paired_test_by_hand(tmp_path, three):
    dirs, grids = three
    agg = write_seeds_report([f"s{k}={d}" for k, d in enumerate(dirs)], tmp_path / "out")
    assert agg["methods"] == METHODS and agg["targets"] == TARGETS and agg["tracks"] == 8
    for t in TARGETS:
        for m in METHODS:
            for k, g in enumerate(grids):
                assert agg["median_sdr"][t][m][f"s{k}"] == pytest.approx(np.median(g[(t, m)]))
    allv = [np.median(np.concatenate([g[(t, "Open-Unmix")] for t in TARGETS])) for g in grids]
    assert [agg["median_sdr"]["all"]["Open-Unmix"][f"s{k}"] for k in range(3)] == pytest.approx(allv)

    vs_umx = agg["comparisons"][0]
    assert (vs_umx["a"], vs_umx["b"]) == ("IASS (weighted)", "Open-Unmix")
    # Open-Unmix got +1.5 dB in s1: IASS ahead on both targets in s0 and s2 only
    assert vs_umx["targets_ahead"] == {"s0": 2, "s1": 0, "s2": 2}
    for t in TARGETS:
        assert vs_umx["targets"][t]["ahead_in"] == 2
        diff = np.mean([g[(t, "IASS (weighted)")] - g[(t, "Open-Unmix")] for g in grids], axis=0)
        row = vs_umx["targets"][t]
        assert row["median_diff"] == pytest.approx(np.median(diff))
        assert row["gain_tracks"] == int((diff > 0).sum()) and row["tracks"] == 8
    assert agg["bracket"] == {"s0": 2, "s1": 2, "s2": 2}

    summary = (tmp_path / "out" / "seeds.md").read_text()
    assert "| vocals | IASS (weighted) |" in summary and "## IASS (weighted) vs Open-Unmix" in summary
    assert "`s1` 0 of 2" in summary
    metrics = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert metrics["comparisons"][1]["b"] == "IASS (unweighted)"
    # no oracle gate in these reports: its comparison is left out, not reported as empty
    assert len(metrics["comparisons"]) == 2


def test_wilcoxon_exact_when_every_track_gains(tmp_path):
    """Eight tracks, all gaining: the exact two-sided signed-rank p is 2 / 2**8."""
    rng = np.random.default_rng(1)
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        g = grid(rng)
        for t in TARGETS:
            g[(t, "IASS (weighted)")] = g[(t, "Open-Unmix")] + 0.1 + np.arange(8) * 0.05
        write_results(d, g)
    reports = load_reports([str(a), str(b)])
    row = paired(reports, "IASS (weighted)", "Open-Unmix", "vocals")
    assert row["gain_tracks"] == 8 and row["p"] == pytest.approx(2 / 2**8)
    assert row["median_diff"] == pytest.approx(0.1 + 3.5 * 0.05)


def test_nan_cells_and_other_metrics_are_left_out(tmp_path):
    rng = np.random.default_rng(2)
    g = grid(rng)
    g[("piano", "Open-Unmix")][3] = np.nan       # a track where a method had no scored window
    write_results(tmp_path / "a", g)
    write_results(tmp_path / "b", grid(rng))
    reports = load_reports([str(tmp_path / "a"), str(tmp_path / "b")])
    assert set(reports[0].sdr["method"]) == set(METHODS)
    assert reports[0].sdr.height == 2 * 5 * 8 - 1
    row = paired(reports, "IASS (weighted)", "Open-Unmix", "piano")
    assert row["tracks"] == 7


def test_errors_name_the_report(tmp_path, three):
    dirs, _ = three
    with pytest.raises(ValueError, match="at least two"):
        load_reports([str(dirs[0])])
    with pytest.raises(ValueError, match=r"nope/results.parquet: no evaluation results"):
        load_reports([str(dirs[0]), str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="the same report given twice"):
        load_reports([f"a={dirs[0]}", f"b={dirs[0]}"])
    with pytest.raises(ValueError, match="given twice"):
        load_reports([f"a={dirs[0]}", f"a={dirs[1]}"])
    rng = np.random.default_rng(3)
    write_results(tmp_path / "fewer", grid(rng, tracks=6), tracks=6)
    with pytest.raises(ValueError, match=r"fewer: scores other \(track, target\) pairs .*4 differ"):
        load_reports([str(dirs[0]), str(tmp_path / "fewer")])


def test_cli(tmp_path, three):
    dirs, _ = three
    out = tmp_path / "seeds"
    res = subprocess.run([sys.executable, "-m", "iass.cli", "report", "seeds", *map(str, dirs),
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("# SDR over training seeds") and str(out / "seeds.md") in res.stdout
    assert (out / "seeds.md").read_text() in res.stdout
    bad = subprocess.run([sys.executable, "-m", "iass.cli", "report", "seeds", str(dirs[0])],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "iass report seeds: need at least two reports to compare seeds"
    assert pl.read_parquet(dirs[0] / RESULTS).height == 2 * 5 * 8 * 2    # inputs untouched
