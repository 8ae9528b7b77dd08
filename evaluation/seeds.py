"""The same comparison over several training seeds: ``iass report seeds``.

On a CPU budget a model's median SDR moves by a few tenths of a dB from one training seed to the
next, so one run cannot call a margin that small. This reads the ``results.parquet`` of several
``iass evaluate`` reports (one per seed: same corpus split, same methods) and writes:

- ``seeds.md``: per target, each method's median SDR in every report and the median over them;
  for each pair compared (default: IASS weighted vs Open-Unmix, weighted vs unweighted, the oracle
  gate vs unweighted), on how many reports A is ahead per target, and the paired test over tracks:
  each track's SDR difference averaged over the reports, its median, how many tracks gain, and
  the two-sided Wilcoxon signed-rank p (tracks are the independent units; seeds average out the
  training noise); last, in how many reports IBM is above and input-SDR below every method.
- ``seeds.json``: the same numbers.

A report is named by its directory, or ``NAME=DIR`` (``seed42=reports/evaluate``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iass.evaluation.evaluate import IBM, INPUT
from iass.evaluation.report import _fmt, _median
from iass.io import atomic_write_json, atomic_write_text

SEEDS_SUMMARY = "seeds.md"
SEEDS_METRICS = "seeds.json"
WEIGHTED, UNWEIGHTED, ORACLE = "IASS (weighted)", "IASS (unweighted)", "IASS (oracle gate)"
UMX = "Open-Unmix"
DEFAULT_PAIRS = ((WEIGHTED, UMX), (WEIGHTED, UNWEIGHTED), (ORACLE, UNWEIGHTED))
METHOD_ORDER = (WEIGHTED, UNWEIGHTED, ORACLE, UMX, IBM, INPUT)


@dataclass(frozen=True)
class Report:
    name: str
    path: Path
    sdr: "object"  # polars DataFrame: track_id, target, method, value (the track's median SDR)


def parse_spec(spec: str) -> tuple[str, Path]:
    """``NAME=DIR`` or ``DIR`` (named by its folder)."""
    name, sep, path = spec.partition("=")
    if not sep:
        return Path(spec).resolve().name, Path(spec)
    if not name or not path:
        raise ValueError(f"{spec!r}: expected NAME=DIR or DIR")
    return name, Path(path)


def load_reports(specs: list[str]) -> list[Report]:
    """Each report's per-track SDR rows; errors name the report and what is wrong."""
    import polars as pl

    from iass.evaluation.report import RESULTS

    if len(specs) < 2:
        raise ValueError("need at least two reports to compare seeds")
    reports: list[Report] = []
    for spec in specs:
        name, path = parse_spec(spec)
        file = path / RESULTS
        if not file.is_file():
            raise ValueError(f"{file}: no evaluation results here (run `iass evaluate --out {path}`)")
        if any(r.name == name for r in reports):
            raise ValueError(f"{spec}: report name {name!r} given twice (use NAME=DIR)")
        if any(r.path.resolve() == path.resolve() for r in reports):
            raise ValueError(f"{spec}: the same report given twice")
        df = pl.read_parquet(file)
        missing = {"track_id", "target", "method", "metric", "value"} - set(df.columns)
        if missing:
            raise ValueError(f"{file}: not an `iass evaluate` results table (no {sorted(missing)})")
        sdr = (df.filter((pl.col("metric") == "SDR") & pl.col("value").is_not_nan())
               .select("track_id", "target", "method", "value"))
        if sdr.is_empty():
            raise ValueError(f"{file}: no SDR rows")
        reports.append(Report(name, path, sdr))
    _check_same_tracks(reports)
    return reports


def _check_same_tracks(reports: list[Report]) -> None:
    """Paired comparisons need the same (track, target) cells scored in every report."""
    import polars as pl

    def cells(r: Report) -> set[tuple[str, str]]:
        ibm = r.sdr.filter(pl.col("method") == IBM)
        return set((ibm if not ibm.is_empty() else r.sdr).select("track_id", "target").iter_rows())

    first = cells(reports[0])
    for r in reports[1:]:
        other = cells(r)
        if other != first:
            diff = sorted(first ^ other)[:3]
            raise ValueError(f"{r.path}: scores other (track, target) pairs than {reports[0].path} "
                             f"({len(first ^ other)} differ, e.g. {diff}): not the same corpus split")


def common_methods(reports: list[Report]) -> list[str]:
    methods = set.intersection(*(set(r.sdr["method"].unique()) for r in reports))
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(methods - set(known))


def targets_of(reports: list[Report]) -> list[str]:
    return reports[0].sdr["target"].unique(maintain_order=True).to_list()


def median_sdr(report: Report, method: str, target: str) -> float:
    """Median over tracks, as in summary.md (``all`` = over every (track, target))."""
    import polars as pl

    sub = report.sdr.filter(pl.col("method") == method)
    if target != "all":
        sub = sub.filter(pl.col("target") == target)
    return _median(sub["value"].to_list())


def paired(reports: list[Report], a: str, b: str, target: str) -> dict:
    """Per track, SDR(a) - SDR(b) averaged over the reports; its median, the tracks that gain,
    and the two-sided Wilcoxon signed-rank p over tracks (exact for few tracks, scipy's default)."""
    import polars as pl
    from scipy.stats import wilcoxon

    per_report = []
    for r in reports:
        sub = r.sdr if target == "all" else r.sdr.filter(pl.col("target") == target)
        wide = (sub.filter(pl.col("method").is_in([a, b]))
                .pivot(on="method", index=["track_id", "target"], values="value"))
        if a not in wide.columns or b not in wide.columns:
            return {"tracks": 0}
        per_report.append(wide.select("track_id", "target", (pl.col(a) - pl.col(b)).alias(r.name)))
    joined = per_report[0]
    for part in per_report[1:]:
        joined = joined.join(part, on=["track_id", "target"], how="inner")
    diff = joined.select([r.name for r in reports]).to_numpy().astype(np.float64)
    diff = diff[~np.isnan(diff).any(axis=1)].mean(axis=1) if diff.size else np.zeros(0)
    out = {"tracks": int(diff.size), "median_diff": _median(diff),
           "gain_tracks": int((diff > 0).sum()), "p": float("nan")}
    if np.count_nonzero(diff) >= 1:
        out["p"] = float(wilcoxon(diff, zero_method="wilcox").pvalue)
    return out


def aggregate(reports: list[Report], pairs=DEFAULT_PAIRS) -> dict:
    methods = common_methods(reports)
    targets = targets_of(reports)
    medians = {t: {m: {r.name: median_sdr(r, m, t) for r in reports} for m in methods}
               for t in targets + ["all"]}
    comparisons = []
    for a, b in pairs:
        if a not in methods or b not in methods:
            continue
        rows = {}
        for t in targets + ["all"]:
            ahead = sum(medians[t][a][r.name] > medians[t][b][r.name] for r in reports)
            rows[t] = {"ahead_in": ahead, **paired(reports, a, b, t)}
        per_report = {r.name: sum(medians[t][a][r.name] > medians[t][b][r.name] for t in targets)
                      for r in reports}
        comparisons.append({"a": a, "b": b, "targets": rows, "targets_ahead": per_report})
    bracket = {}
    inner = [m for m in methods if m not in (IBM, INPUT)]
    if IBM in methods and INPUT in methods and inner:
        for r in reports:
            bracket[r.name] = sum(
                all(medians[t][IBM][r.name] > medians[t][m][r.name] > medians[t][INPUT][r.name]
                    for m in inner) for t in targets)
    return {"reports": {r.name: str(r.path) for r in reports}, "methods": methods,
            "targets": targets, "median_sdr": medians, "comparisons": comparisons,
            "bracket": bracket, "tracks": reports[0].sdr["track_id"].n_unique()}


def _p(x) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def summary_lines(agg: dict) -> list[str]:
    names = list(agg["reports"])
    n = len(names)
    targets, methods = agg["targets"], agg["methods"]
    lines = ["# SDR over training seeds", "",
             "- reports: " + ", ".join(f"`{name}` (`{path}`)" for name, path in agg["reports"].items()),
             f"- {agg['tracks']} tracks scored in every report; a cell is the median over tracks of "
             "the track's median SDR over its 1 s windows (as in each summary.md), dB", ""]
    lines += ["## Median SDR: median over the reports [lowest, highest]", "",
              "| target | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for t in targets + ["all"]:
        cells = []
        for m in methods:
            v = list(agg["median_sdr"][t][m].values())
            cells.append(f"{_fmt(_median(v))} [{_fmt(min(v))}, {_fmt(max(v))}]")
        lines.append(f"| {'**all**' if t == 'all' else t} | " + " | ".join(cells) + " |")
    lines += ["", "## Median SDR per report", "",
              "| target | method | " + " | ".join(names) + " |", "|---|---|" + "---:|" * n]
    for t in targets + ["all"]:
        for m in methods:
            v = agg["median_sdr"][t][m]
            lines.append(f"| {'**all**' if t == 'all' else t} | {m} | "
                         + " | ".join(_fmt(v[name]) for name in names) + " |")
    for c in agg["comparisons"]:
        a, b = c["a"], c["b"]
        lines += ["", f"## {a} vs {b}", "",
                  f"Targets where {a} has the higher median SDR, per report: "
                  + ", ".join(f"`{name}` {k} of {len(targets)}" for name, k in c["targets_ahead"].items())
                  + ". Per target: `ahead in` = reports where it is; then over tracks, each track's "
                  "SDR difference averaged over the reports: its median, the tracks that gain, and "
                  "the two-sided Wilcoxon signed-rank p (small = a difference the seeds do not explain "
                  "away).", "",
                  "| target | ahead in | median ΔSDR (dB) | tracks that gain | Wilcoxon p |",
                  "|---|---:|---:|---:|---:|"]
        for t in targets + ["all"]:
            row = c["targets"][t]
            gain = f"{row['gain_tracks']} of {row['tracks']}" if row.get("tracks") else "–"
            lines.append(f"| {'**all**' if t == 'all' else t} | {row['ahead_in']} of {n} | "
                         f"{_fmt(row.get('median_diff'))} | {gain} | {_p(row.get('p'))} |")
    if agg["bracket"]:
        lines += ["", "## IBM above, input-SDR below every method", "",
                  "Targets where it holds, per report: "
                  + ", ".join(f"`{name}` {k} of {len(targets)}" for name, k in agg["bracket"].items()) + "."]
    return lines + [""]


def write_seeds_report(specs: list[str], out_dir, pairs=DEFAULT_PAIRS) -> dict:
    reports = load_reports(specs)
    agg = aggregate(reports, pairs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SEEDS_SUMMARY, "\n".join(summary_lines(agg)))
    atomic_write_json(out / SEEDS_METRICS, _json_safe(agg))
    return agg


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj
