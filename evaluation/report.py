"""The evaluation report: results.parquet, summary.md, box plots (PNG) and metrics.json.

- ``results.parquet``: long format, one row per track x target x method x metric
  (BSS metrics: the track's median over its 1 s windows; activity metrics: the track's frames).
- ``activity.parquet``: activity scores pooled over all frames of the split, per run x target.
- ``summary.md``: median over tracks of SDR / SIR / SAR and of the silence scores PES / EPS per
  target and method, the SDR of the windows where the target is partly silent vs active
  throughout (where a gate can act), and the pooled activity precision / recall / F1 / ROC-AUC
  per target; the tables a reader compares first.
- ``sdr_boxplot.png``: SDR per target and method, every method as box plots.
- ``figure.png``: the paper's layout (``evaluate.figure``): ``fig3`` (Hung & Lerch 2020, Fig. 3,
  MUSDB18): per target, box plots over tracks of SDR / SIR / SAR / ISR, Open-Unmix beside IASS,
  one panel per metric; ``fig4`` (Fig. 4, per instrument): median SDR over tracks of Open-Unmix,
  IASS, IBM and input-SDR as grouped bars. ``summary.md`` opens with its medians as a table.
- multi-pitch (runs with a pitch head): per-track rows ``pitch_precision`` ... ``pitch_f`` in
  ``results.parquet``, pooled scores in summary.md and metrics.json ``pitch``
  (:mod:`iass.evaluation.pitch`).
- ``metrics.json``: median SDR / SIR / SAR / PES / EPS (and SDR_partial / SDR_active) per target and method plus activity
  F1 / AUC, for ``dvc metrics``; keys are slugs (``iass_weighted``, ``open_unmix``, ``ibm``, ``input_sdr``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from iass.errors import ConfigError
from iass.evaluation.pitch import pitch_metrics, pitch_section, pooled_pitch
from iass.io import atomic_path, atomic_write_json, atomic_write_parquet, atomic_write_text

SUMMARY = "summary.md"
RESULTS = "results.parquet"
ACTIVITY = "activity.parquet"
METRICS = "metrics.json"
BOXPLOT = "sdr_boxplot.png"
FIGURE = "figure.png"
FIGURES = ("fig3", "fig4")
FIG3_METRICS = ("SDR", "SIR", "SAR", "ISR")
TABLE_METRICS = ("SDR", "SIR", "SAR", "PES", "EPS")
SILENCE_TITLES = {
    "PES": "Predicted energy at silence (Schulze-Forster et al. 2019): mean over the 1 s windows "
           "where the target is silent of the estimate's energy in dB (-120 = muted); every known "
           "target of a track, also one it never plays. What activity weighting is meant to remove, "
           "and what BSS Eval cannot see (it drops those windows).",
    "EPS": "Energy at predicted silence: mean over the windows where the estimate is silent but "
           "the target sounds of the target's energy in dB: what muting lost; median over the "
           "tracks where it happened, `tracks` = how many (–: a method never muted a sounding "
           "target).",
}


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def _median(values) -> float:
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    return float(np.median(v)) if v.size else float("nan")


def _none_if_nan(x: float):
    return None if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else x


def results_frame(results: list[dict]):
    import polars as pl

    schema = {"track_id": pl.String, "source": pl.String, "target": pl.String,
              "method": pl.String, "run": pl.String, "metric": pl.String, "value": pl.Float64}
    rows = [r for res in results for r in res["rows"]]
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def pooled_activity(results: list[dict]) -> list[dict]:
    """Activity scores over all frames of all tracks, per (run, target)."""
    from iass.evaluation.metrics import activity_scores

    groups: dict[tuple[str, str], list] = {}
    for res in results:
        for key, arrays in res["frames"].items():
            groups.setdefault(key, []).append(arrays)
    out = []
    for (run, target), parts in sorted(groups.items()):
        p = np.concatenate([a[0] for a in parts])
        d = np.concatenate([a[1] for a in parts])
        t = np.concatenate([a[2] for a in parts])
        s = activity_scores(p, d, t)
        out.append({"run": run, "target": target, **{k: float(s[k]) for k in
                    ("precision", "recall", "f1", "auc")},
                    "frames": int(s["frames"]), "active_frames": int(s["tp"] + s["fn"])})
    return out


def median_table(df, metric: str, methods: list, targets: list[str]) -> dict[str, dict[str, float]]:
    """{target: {method label: median over tracks}} plus 'all' over every (track, target)."""
    import polars as pl

    sub = df.filter(pl.col("metric") == metric)
    out: dict[str, dict[str, float]] = {}
    for target in list(targets) + ["all"]:
        part = sub if target == "all" else sub.filter(pl.col("target") == target)
        out[target] = {m.label: _median(part.filter(pl.col("method") == m.label)["value"].to_list())
                       for m in methods}
    return out


def _count_tracks(df, target: str, metric: str = "SDR") -> int:
    import polars as pl

    part = df.filter((pl.col("metric") == metric) & pl.col("value").is_not_nan())
    if target != "all":
        part = part.filter(pl.col("target") == target)
    return part["track_id"].n_unique()


def write_report(out_dir, results: list[dict], methods: list, targets: list[str], corpus, config,
                 runs) -> dict:
    """results.parquet, activity.parquet, summary.md, sdr_boxplot.png and metrics.json in
    ``out_dir``; returns the metrics dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = results_frame(results)
    atomic_write_parquet(out_dir / RESULTS, df)
    activity = pooled_activity(results)
    _write_activity_table(out_dir / ACTIVITY, activity)
    tables = {m: median_table(df, m, methods, targets) for m in TABLE_METRICS}
    figure = check_figure(getattr(config, "figure", "fig4"))
    fig_methods = figure_methods(methods, runs, figure)
    lines = _header_lines(results, methods, corpus, config, runs)
    lines += figure_section(df, fig_methods, targets, figure)
    lines += _metric_sections(df, tables, methods, targets)
    lines += window_class_section(df, methods, targets)
    lines += _activity_section(activity, targets)
    pitch = pooled_pitch(results)             # runs with a pitch head: mir_eval.multipitch
    lines += pitch_section(pitch, targets, _fmt)
    atomic_write_text(out_dir / SUMMARY, "\n".join(lines))
    plot_sdr(df, methods, targets, out_dir / BOXPLOT)
    plot_figure(df, fig_methods, targets, out_dir / FIGURE, figure)
    metrics = _metrics_json(df, tables, activity, methods, targets, runs)
    if pitch:
        from iass.evaluation.evaluate import slug

        metrics["pitch"] = pitch_metrics(pitch, slug)
    metrics["tracks"] = len(results)
    atomic_write_json(out_dir / METRICS, metrics)
    return metrics


def _write_activity_table(path: Path, activity: list[dict]) -> None:
    import polars as pl

    act_schema = {"run": pl.String, "target": pl.String, "precision": pl.Float64,
                  "recall": pl.Float64, "f1": pl.Float64, "auc": pl.Float64,
                  "frames": pl.Int64, "active_frames": pl.Int64}
    atomic_write_parquet(path, pl.DataFrame(activity, schema=act_schema, orient="row")
                         if activity else pl.DataFrame(schema=act_schema))


def _header_lines(results: list[dict], methods: list, corpus, config, runs) -> list[str]:
    """The title and the bullet list of what was evaluated and how."""
    return [
        "# Evaluation summary", "",
        f"- corpus: `{corpus.root}` (version `{corpus.version}`), split `{config.split}`, "
        f"{len(results)} tracks",
        "- runs: " + (", ".join(f"`{m.run}` ({m.label})" for m in methods if m.run_index is not None)
                      or "none (references only)"),
        f"- separation: weighting `{config.separation.weighting}` (threshold "
        + ("tuned per target, below" if any(r.thresholds is not None for r in runs)
           else f"{config.separation.threshold}")
        + f", median filter {config.separation.median_frames} frames), "
        f"Wiener post-filter {'on' if config.separation.wiener else 'off'}",
        *[f"- activity thresholds of `{_run_label(r)}`, tuned on the `{config.threshold_split}` split "
          + {"f1": "(best F1 of the applied decision): ",
             "safe": "(the gate nearest 0.5 that separates as well as the best, by SDR within "
                     "0.05 dB; 0.00 = not weighted): "}.get(
              config.threshold_metric, "(the gate that separates best, by SDR; 0.00 = not weighted): ")
          + ", ".join(f"{t} {th:.2f}" for t, th in zip(r.targets, r.thresholds))
          for r in runs if r.thresholds is not None],
        *(["- `(oracle gate)`: the run's masks gated by the corpus' own activity labels instead of "
           "its detector (no median filter): what a perfect detector's hard gate would give, the "
           "upper bound of activity weighting for these masks"]
          if any(m.weighting == "oracle" for m in methods) else []),
        f"- BSS Eval v4 (museval-compatible), {config.win_seconds:g} s windows; a track's score is "
        "the median over the windows where the target and the rest of the mixture sound; tables "
        "show the median over tracks (dB). `IBM`: ideal binary mask (upper bound); `input-SDR`: "
        "the mixture as the estimate (lower bound); IBM on the STFT "
        f"n_fft {config.n_fft}, hop {config.hop}. A window where an estimate is silent scores "
        "SDR 0 dB and no SIR/SAR (museval would drop it, rewarding a method for muting).", "",
    ]


def _metric_sections(df, tables: dict, methods: list, targets: list[str]) -> list[str]:
    """One table per metric of TABLE_METRICS: the median over tracks per target and method."""
    lines: list[str] = []
    labels = [m.label for m in methods]
    for metric in TABLE_METRICS:
        lines += [f"## {metric} (dB{', lower is better' if metric in SILENCE_TITLES else ''})", ""]
        if metric in SILENCE_TITLES:
            lines += [SILENCE_TITLES[metric], ""]
        lines += ["| target | tracks | " + " | ".join(labels) + " |",
                  "|---|---:|" + "---:|" * len(labels)]
        for target in list(targets) + ["all"]:
            name = "**all**" if target == "all" else target
            vals = " | ".join(_fmt(tables[metric][target][lab]) for lab in labels)
            lines.append(f"| {name} | {_count_tracks(df, target, metric)} | {vals} |")
        lines.append("")
    return lines


def _activity_section(activity: list[dict], targets: list[str]) -> list[str]:
    lines = ["## Activity detection (frames pooled over the tracks; unknown frames skipped)", ""]
    if activity:
        lines += ["| target | run | precision | recall | F1 | ROC-AUC | frames (active) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for a in sorted(activity, key=lambda a: (targets.index(a["target"]) if a["target"] in targets
                                                 else 99, a["run"])):
            lines.append(f"| {a['target']} | {a['run']} | {_fmt(a['precision'])} | {_fmt(a['recall'])} "
                         f"| {_fmt(a['f1'])} | {_fmt(a['auc'])} | {a['frames']} ({a['active_frames']}) |")
    else:
        lines.append("No run with activity detection was evaluated.")
    return lines + ["", f"Files: `{RESULTS}` (per track), `{ACTIVITY}`, `{BOXPLOT}`, `{FIGURE}`, "
                        f"`{METRICS}`.", ""]


def _metrics_json(df, tables: dict, activity: list[dict], methods: list, targets: list[str],
                  runs) -> dict:
    """metrics.json (for ``dvc metrics``): medians per metric, target and method key; activity
    scores per target and run; tuned thresholds per run."""
    import polars as pl

    from iass.evaluation.evaluate import slug

    key_of = {m.label: m.key for m in methods}
    metrics = {metric.lower(): {t: {key_of[lab]: _none_if_nan(v) for lab, v in tables[metric][t].items()}
                                for t in tables[metric]}
               for metric in TABLE_METRICS}
    for metric in ("SDR_partial", "SDR_active"):
        if not df.filter(pl.col("metric") == metric).is_empty():
            table = median_table(df, metric, methods, targets)
            metrics[metric.lower()] = {t: {key_of[lab]: _none_if_nan(v) for lab, v in table[t].items()}
                                       for t in table}
    metrics["activity"] = {}
    for a in activity:
        metrics["activity"].setdefault(a["target"], {})[slug(a["run"])] = {
            "f1": _none_if_nan(a["f1"]), "auc": _none_if_nan(a["auc"]),
            "precision": _none_if_nan(a["precision"]), "recall": _none_if_nan(a["recall"])}
    metrics["thresholds"] = {slug(_run_label(r)): dict(zip(r.targets, r.thresholds))
                             for r in runs if r.thresholds is not None}
    return metrics


WINDOW_CLASS_TITLE = (
    "SDR split by what the activity labels say of each scored 1 s window: `partly silent` (some "
    "of its frames active, some not) and `active` (every frame active). A gate that closes on "
    "silence changes the estimate only in partly silent windows (windows where the target is "
    "silent throughout are not scored by BSS Eval: PES scores them), and in active windows it "
    "can only mute what plays. `share` = partly silent windows / scored windows (first method's "
    "count). Each cell: median over tracks of the track's median over those windows, "
    "partly silent / active; tracks without such a window are skipped.")


def window_class_section(df, methods: list, targets: list[str]) -> list[str]:
    """The summary.md table of SDR by window class (empty when no labels were scored)."""
    import polars as pl

    if df.filter(pl.col("metric") == "SDR_partial").is_empty():
        return []
    partial = median_table(df, "SDR_partial", methods, targets)
    active = median_table(df, "SDR_active", methods, targets)
    first = methods[0].label
    labels = [m.label for m in methods]
    lines = ["## SDR where the gate can act (dB, partly silent / active windows)", "",
             WINDOW_CLASS_TITLE, "",
             "| target | share | " + " | ".join(labels) + " |",
             "|---|---:|" + "---:|" * len(labels)]
    for target in list(targets) + ["all"]:
        sub = df.filter(pl.col("method") == first)
        if target != "all":
            sub = sub.filter(pl.col("target") == target)
        n_part = float(sub.filter(pl.col("metric") == "windows_partial")["value"].sum())
        n_act = float(sub.filter(pl.col("metric") == "windows_active")["value"].sum())
        share = n_part / (n_part + n_act) if n_part + n_act else float("nan")
        name = "**all**" if target == "all" else target
        cells = " | ".join(f"{_fmt(partial[target][lab])} / {_fmt(active[target][lab])}" for lab in labels)
        lines.append(f"| {name} | {_fmt(share)} | {cells} |")
    return lines + [""]


def _run_label(spec) -> str:
    from iass.evaluation.evaluate import _run_name

    return _run_name(spec.source)


def plot_sdr(df, methods: list, targets: list[str], path: Path) -> None:
    """Grouped box plots: one group per target, one box per method (SDR per track)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    sub = df.filter(pl.col("metric") == "SDR")
    n_m = len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(targets) * max(n_m, 1) / 3 + 2), 4.5))
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(n_m, 1)
    for j, m in enumerate(methods):
        data, pos = [], []
        for i, t in enumerate(targets):
            v = sub.filter((pl.col("target") == t) & (pl.col("method") == m.label))["value"].to_numpy()
            v = v[np.isfinite(v)]
            if v.size:
                data.append(v)
                pos.append(i - 0.4 + width * (j + 0.5))
        if data:
            bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                            showfliers=True, manage_ticks=False,
                            medianprops={"color": "black", "linewidth": 1.2})
            for box in bp["boxes"]:
                box.set_facecolor(colors(j % 10))
                box.set_alpha(0.8)
        ax.plot([], [], color=colors(j % 10), linewidth=8, label=m.label)
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(targets, rotation=20)
    ax.set_ylabel("SDR (dB), per track")
    ax.set_title("SDR per target and method (BSS Eval v4, median over 1 s windows)")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ the paper's figures
FIGURE_TITLES = {
    "fig3": "Figure 3 layout: SDR / SIR / SAR / ISR per target, median over tracks (dB)",
    "fig4": "Figure 4 layout: median SDR per instrument over tracks (dB)",
}


def check_figure(kind) -> str:
    """``evaluate.figure`` checked: fig3 | fig4 (None: fig4)."""
    kind = "fig4" if kind is None else str(kind).strip().lower()
    if kind not in FIGURES:
        raise ConfigError(f"evaluate.figure = {kind!r}: expected one of {', '.join(FIGURES)}")
    return kind


def figure_methods(methods: list, runs, figure: str) -> list:
    """The methods a figure compares: one per run (an IASS run's weighted variant, the paper's
    IASS; Open-Unmix first, as in the paper), then for ``fig4`` IBM and input-SDR."""
    kinds = {i: getattr(r, "kind", "") for i, r in enumerate(runs or [])}
    primary: dict[int, object] = {}
    for m in methods:
        if m.run_index is None or m.weighting == "oracle":
            continue
        best = primary.get(m.run_index)
        if best is None or (best.weighting == "none" and m.weighting != "none"):
            primary[m.run_index] = m
    chosen = sorted(primary.values(), key=lambda m: (kinds.get(m.run_index) != "umx", m.run_index))
    if figure == "fig4":
        chosen += [m for m in methods if m.run_index is None]
    return chosen or list(methods)


def _figure_metrics(figure: str) -> tuple[str, ...]:
    return FIG3_METRICS if figure == "fig3" else ("SDR",)


def figure_section(df, methods: list, targets: list[str], figure: str) -> list[str]:
    """summary.md's table of the figure's medians (``iass report show`` prints it)."""
    metrics = _figure_metrics(figure)
    labels = [m.label for m in methods]
    tables = {metric: median_table(df, metric, methods, targets) for metric in metrics}
    head = [f"{metric}: {lab}" if len(metrics) > 1 else lab for metric in metrics for lab in labels]
    lines = [f"## {FIGURE_TITLES[figure]}", "",
             f"`{FIGURE}`; the per-metric tables below list every method.", "",
             "| target | tracks | " + " | ".join(head) + " |",
             "|---|---:|" + "---:|" * len(head)]
    for target in list(targets) + ["all"]:
        name = "**all**" if target == "all" else target
        cells = " | ".join(_fmt(tables[metric][target][lab]) for metric in metrics for lab in labels)
        lines.append(f"| {name} | {_count_tracks(df, target)} | {cells} |")
    return lines + [""]


def _track_values(df, metric: str, target: str, label: str) -> np.ndarray:
    import polars as pl

    v = df.filter((pl.col("metric") == metric) & (pl.col("target") == target)
                  & (pl.col("method") == label))["value"].to_numpy()
    return v[np.isfinite(v)]


def plot_figure(df, methods: list, targets: list[str], path: Path, figure: str) -> None:
    """``figure.png`` in the layout of the paper's Fig. 3 or Fig. 4 (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    n_m = max(len(methods), 1)
    width = 0.8 / n_m
    ticks = [f"{t}\n(n={_count_tracks(df, t)})" for t in targets]
    if figure == "fig3":
        fig, axes = plt.subplots(len(FIG3_METRICS), 1, sharex=True,
                                 figsize=(max(6.5, 1.1 * len(targets) * n_m + 2.5), 10.5))
        for ax, metric in zip(axes, FIG3_METRICS):
            for j, m in enumerate(methods):
                data, pos = [], []
                for i, t in enumerate(targets):
                    v = _track_values(df, metric, t, m.label)
                    if v.size:
                        data.append(v)
                        pos.append(i - 0.4 + width * (j + 0.5))
                if data:
                    bp = ax.boxplot(data, positions=pos, widths=width * 0.8, patch_artist=True,
                                    manage_ticks=False, flierprops={"markersize": 3},
                                    medianprops={"color": "black", "linewidth": 1.2})
                    for box in bp["boxes"]:
                        box.set_facecolor(colors(j % 10))
                        box.set_alpha(0.85)
            ax.set_ylabel(f"{metric} (dB)")
            ax.axhline(0, color="grey", linewidth=0.5)
            ax.grid(axis="y", alpha=0.3)
            ax.set_xlim(-0.6, len(targets) - 0.4)
        axes[-1].set_xticks(range(len(targets)))
        axes[-1].set_xticklabels(ticks)
        axes[-1].set_xlabel("target (n = tracks scored)")
        title = "BSS Eval v4 per target: one box per method over the tracks (median over 1 s windows)"
    else:
        fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * len(targets) * n_m + 2.5), 5.0))
        table = median_table(df, "SDR", methods, targets)
        for j, m in enumerate(methods):
            x = [i - 0.4 + width * (j + 0.5) for i in range(len(targets))]
            y = [table[t][m.label] for t in targets]
            ax.bar(x, [0.0 if math.isnan(v) else v for v in y], width=width * 0.9,
                   color=colors(j % 10), edgecolor="black", linewidth=0.4)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels(ticks)
        ax.set_xlim(-0.6, len(targets) - 0.4)
        ax.set_xlabel("instrument (n = tracks scored)")
        ax.set_ylabel("median SDR over tracks (dB)")
        title = "Median SDR per instrument (BSS Eval v4, median over 1 s windows per track)"
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors(j % 10), edgecolor="black", label=m.label)
               for j, m in enumerate(methods)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 4), fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, 0.995))
    fig.suptitle(title, fontsize=10, y=0.94 if figure == "fig4" else 0.965)
    fig.tight_layout(rect=(0, 0, 1, 0.92 if figure == "fig4" else 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def show(out_dir) -> str:
    """The summary of an evaluation directory (``iass report show DIR``)."""
    path = Path(out_dir) / SUMMARY
    if not path.is_file():
        raise ConfigError(f"{path}: no evaluation summary here (run `iass evaluate --out {out_dir}` first)")
    return path.read_text()
