"""figure.png in the paper's layouts (evaluate.figure: fig3 | fig4) and its medians in summary.md."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest

from iass.errors import ConfigError
from iass.evaluation import report
from iass.evaluation.evaluate import EvaluateConfig, Method, RunSpec, config_from_params, plan_methods
from iass.evaluation.separate import SeparationConfig

TARGETS = ["vocals", "drums", "bass", "other"]


def _runs():
    return [RunSpec("runs/iass", "IASS", "iass", tuple(TARGETS), True),
            RunSpec("runs/umx", "Open-Unmix", "umx", tuple(TARGETS), False)]


def _results(methods: list[Method], n_tracks: int = 5) -> list[dict]:
    """Per-track rows as evaluate writes them: BSS metrics per (track, target, method)."""
    rng = np.random.default_rng(0)
    base = {"IBM": 12.0, "input-SDR": -4.0, "Open-Unmix": 4.0}
    out = []
    for k in range(n_tracks):
        rows = []
        for t_i, target in enumerate(TARGETS):
            for m in methods:
                centre = base.get(m.label, 5.0) - t_i
                for metric, shift in (("SDR", 0.0), ("SIR", 6.0), ("SAR", 2.0), ("ISR", 8.0)):
                    rows.append({"track_id": f"t{k}", "source": "musdb", "target": target,
                                 "method": m.label, "run": m.run, "metric": metric,
                                 "value": float(centre + shift + rng.normal())})
        out.append({"rows": rows, "frames": {}})
    return out


def _write(tmp_path, figure: str):
    runs = _runs()
    methods = plan_methods(runs, "hard", oracle_gate=True)
    config = EvaluateConfig(separation=SeparationConfig(weighting="hard"), figure=figure)
    corpus = SimpleNamespace(root=tmp_path / "corpus", version="0123456789abcdef")
    out = tmp_path / figure
    metrics = report.write_report(out, _results(methods), methods, TARGETS, corpus, config, runs)
    return out, methods, metrics


@pytest.mark.parametrize("figure", ["fig3", "fig4"])
def test_both_figures_are_written_with_their_medians(tmp_path, figure):
    out, methods, _ = _write(tmp_path, figure)
    for name in (report.FIGURE, report.BOXPLOT):       # sdr_boxplot.png stays as it was
        png = mpimg.imread(out / name)
        assert png.ndim == 3 and png.shape[0] > 300 and png.shape[1] > 500, name
    summary = (out / report.SUMMARY).read_text()
    assert f"## {report.FIGURE_TITLES[figure]}" in summary
    section = summary.split(f"## {report.FIGURE_TITLES[figure]}")[1].split("\n## ")[0]
    header = next(line for line in section.splitlines() if line.startswith("| target |"))
    if figure == "fig3":   # Open-Unmix beside the paper's IASS (the weighted one), four metrics
        for metric in report.FIG3_METRICS:
            assert f"{metric}: Open-Unmix | {metric}: IASS (weighted)" in header
        assert "IBM" not in header and "oracle" not in header
    else:                  # per instrument: the two models and the two references, SDR
        assert header == "| target | tracks | Open-Unmix | IASS (weighted) | IBM | input-SDR |"
    for target in TARGETS + ["**all**"]:
        row = next(line for line in section.splitlines() if line.startswith(f"| {target} |"))
        cells = [c.strip() for c in row.strip("|").split("|")][2:]
        assert cells and all(np.isfinite(float(c)) for c in cells), row
    # the medians in the table are the medians of the rows
    import polars as pl

    df = pl.read_parquet(out / report.RESULTS)
    want = df.filter((pl.col("target") == "other") & (pl.col("method") == "Open-Unmix")
                     & (pl.col("metric") == "SDR"))["value"].median()
    row = next(line for line in section.splitlines() if line.startswith("| other |"))
    assert f"| {want:.2f} |" in row
    # `iass report show DIR` prints the summary, the figure's medians first
    res = subprocess.run([sys.executable, "-m", "iass.cli", "report", "show", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and report.FIGURE_TITLES[figure] in res.stdout


def test_figure_param_and_flag(tmp_path):
    assert config_from_params({}).figure == "fig4"
    assert config_from_params({"evaluate": {"figure": "fig3"}}).figure == "fig3"
    assert config_from_params({"evaluate": {"figure": "fig3"}}, figure="fig4").figure == "fig4"
    with pytest.raises(ConfigError, match="evaluate.figure = 'fig5'"):
        config_from_params({"evaluate": {"figure": "fig5"}})
    res = subprocess.run([sys.executable, "-m", "iass.cli", "evaluate", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert "--figure {fig3,fig4}" in res.stdout
