"""The evaluation as a page to look at and listen to: ``<report>/html/index.html``.

Two halves:

- :func:`capture_track` runs inside ``iass evaluate``'s worker, while the estimates of a track
  exist: it picks the track's excerpt (the :data:`~iass.pipelines.html_media.EXCERPT_SECONDS`
  where the corpus labels change most) and saves, under ``html/assets/<track_id>/``, the
  mixture, each target's reference and each method's estimate as MP3 (44.1 kHz, one gain per
  track so levels compare) with a spectrogram image each (one dB scale per track), the runs'
  activity probability and decision and the corpus labels over the excerpt (``activity.npz``)
  and what it wrote (``excerpt.json``).
- :func:`render` builds ``html/index.html`` from those assets and the report's tables
  (results.parquet, activity.parquet, metrics.json, summary.md): the median tables, the SDR box
  plot, then per track the players and per target the activity plot (probability, the gate's
  threshold and decision, the corpus labels) with the track's SDR / SIR / PES. ``iass report
  html DIR`` re-renders it without separating again.

Sizes: one 10 s clip is ~160 kB of MP3 (128 kbit/s) plus a ~25 kB JPEG; a track has
1 + targets x (1 + methods) clips: 12 tracks x 6 targets x (reference + 4 methods) = 372 clips,
~70 MB.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from iass.errors import ConfigError
from iass.io import atomic_write_json, atomic_write_text
from iass.pipelines import html_media as hm

log = logging.getLogger(__name__)

HTML_DIR = "html"
ASSETS = "assets"
INDEX = "index.html"
EXCERPT_JSON = "excerpt.json"
ACTIVITY_NPZ = "activity.npz"
TABLE_METRICS = ("SDR", "SIR", "SAR", "PES", "EPS")
LOWER_IS_BETTER = {"PES", "EPS"}
TRACK_METRICS = ("SDR", "SIR", "PES")
REFERENCE_METHODS = ("IBM", "input-SDR")
FIGURE = "figure.png"    # report.py's figure in the paper's layout, when it wrote one


def assets_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / HTML_DIR / ASSETS


def reset_assets(out_dir: str | Path) -> Path:
    """An empty ``html/assets`` in a report directory (the previous evaluation's excerpts go)."""
    path = assets_dir(out_dir)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _file_slug(text: str) -> str:
    from iass.pipelines.corpus_format import slugify

    return slugify(text, max_len=64, sep="-", fold=True, empty="x")


# ----------------------------------------------------------------------- capture (worker)
def capture_track(assets_root: str | Path, track, estimates: dict, activity: dict, runs: list,
                  methods: list, config, seconds: float = hm.EXCERPT_SECONDS) -> dict:
    """Save the excerpt of one evaluated track (see the module doc). ``track`` is evaluate's
    ``_Track``; ``estimates`` {method label: {target: (n, 2)}}; ``activity`` {run name: {target:
    (probability, decision, hop)}}. Returns the excerpt.json dict."""
    from iass.evaluation.evaluate import INPUT, _activity_label

    sr, hop, n = int(track.sr), int(track.hop), len(track.mixture)
    targets = list(track.known)
    labels = np.stack([track.truth_of[t] for t in targets]) if targets else None
    start, length = hm.pick_excerpt(labels, hop, n, sr, seconds)
    cut = slice(start, start + length)
    clips: list[tuple[str, np.ndarray]] = [("mixture", track.mixture[cut])]
    meta_targets: dict[str, dict] = {}
    for t in targets:
        entry = {"reference": f"{_file_slug(t)}/reference", "methods": []}
        clips.append((entry["reference"], track.references[t][cut]))
        for m in methods:
            if m.label == INPUT or t not in estimates.get(m.label, {}):
                continue
            stem = f"{_file_slug(t)}/{_file_slug(m.key or m.label)}"
            entry["methods"].append({"label": m.label, "file": stem})
            clips.append((stem, estimates[m.label][t][cut]))
        meta_targets[t] = entry
    peak = max(float(np.max(np.abs(a))) if a.size else 0.0 for _, a in clips)
    gain = 0.99 / peak if peak > 0.99 else 1.0            # one gain: the clips' levels compare
    ref_power = hm.peak_power(track.mixture[cut] * gain, sr)
    root = Path(assets_root) / track.track_id
    root.mkdir(parents=True, exist_ok=True)
    scaled = [(np.asarray(audio, dtype=np.float32) * gain, stem) for stem, audio in clips]
    hm.encode_mp3_many([(audio, root / f"{stem}.mp3") for audio, stem in scaled], sr)
    for audio, stem in scaled:
        hm.save_spectrogram(audio, sr, root / f"{stem}.jpg", ref_power)

    f0, f1 = start // hop, (start + length + hop - 1) // hop
    arrays: dict[str, np.ndarray] = {}
    for t, lab in track.truth_of.items():
        arrays[f"label/{t}"] = np.asarray(lab[f0:f1], dtype=np.float32)
    run_meta: dict[str, dict] = {}
    for run_name, per_target in activity.items():
        ms = [m for m in methods if m.run == run_name and m.run_index is not None]
        spec = runs[ms[0].run_index]
        thr = (np.asarray(spec.thresholds, dtype=np.float64) if spec.thresholds is not None
               else config.separation.thresholds(len(spec.targets))[:, 0])
        thresholds = dict(zip(spec.targets, (float(x) for x in thr)))
        run_meta[run_name] = {"label": _activity_label(ms[0].label), "thresholds": {}, "hop": hop}
        for t, (prob, dec, run_hop) in per_target.items():
            a, b = start // run_hop, (start + length + run_hop - 1) // run_hop
            arrays[f"prob/{run_name}/{t}"] = np.asarray(prob[a:b], dtype=np.float32)
            arrays[f"dec/{run_name}/{t}"] = np.asarray(dec[a:b], dtype=np.float32)
            run_meta[run_name]["thresholds"][t] = thresholds.get(t)
            run_meta[run_name]["hop"] = int(run_hop)
    np.savez_compressed(root / ACTIVITY_NPZ, **arrays)
    meta = {"track_id": track.track_id, "source": track.base.get("source"),
            "start_s": start / sr, "seconds": length / sr, "sample_rate": sr, "hop": hop,
            "gain": gain, "mixture": "mixture", "targets": meta_targets, "runs": run_meta}
    atomic_write_json(root / EXCERPT_JSON, meta)
    return meta


# ------------------------------------------------------------------------------- render
def render(out_dir: str | Path) -> Path:
    """(Re)write ``<out_dir>/html/index.html`` from the report's tables and the saved excerpts;
    returns its path. Raises ConfigError when ``out_dir`` holds no evaluation report."""
    import polars as pl

    from iass.evaluation.report import ACTIVITY, BOXPLOT, METRICS, RESULTS, SUMMARY

    out_dir = Path(out_dir)
    if not (out_dir / RESULTS).is_file():
        raise ConfigError(f"{out_dir}: no {RESULTS} (not a report of `iass evaluate --out {out_dir}`)")
    html_dir = out_dir / HTML_DIR
    assets = assets_dir(out_dir)
    assets.mkdir(parents=True, exist_ok=True)
    df = pl.read_parquet(out_dir / RESULTS)
    methods = df.filter(pl.col("metric").is_in(TABLE_METRICS))["method"].unique(maintain_order=True).to_list()
    targets = df["target"].unique(maintain_order=True).to_list()
    metrics = _read_json(out_dir / METRICS)
    summary = (out_dir / SUMMARY).read_text() if (out_dir / SUMMARY).is_file() else ""

    body = [f"<h1>Evaluation: {hm.esc(out_dir.resolve().name)}</h1>"]
    body += _intro(summary, metrics, df)
    body.append("<h2>Results (median over tracks)</h2>")
    for metric in TABLE_METRICS:
        part = df.filter(pl.col("metric") == metric)
        if part.height:
            body.append(f"<h3>{metric}</h3>")
            body.append(_median_table(part, methods, targets, metric))
    if (out_dir / ACTIVITY).is_file():
        act = pl.read_parquet(out_dir / ACTIVITY)
        if act.height:
            body.append("<h3>Activity detection (pooled over all frames)</h3>")
            body.append(hm.table(["run", "target", "precision", "recall", "F1", "ROC-AUC", "frames"],
                                 [[r["run"], r["target"], hm.fmt(r["precision"]), hm.fmt(r["recall"]),
                                   hm.fmt(r["f1"]), hm.fmt(r["auc"]), r["frames"]]
                                  for r in act.iter_rows(named=True)]))
    figs = [name for name in (FIGURE, BOXPLOT) if (out_dir / name).is_file()]
    for name in figs:
        shutil.copyfile(out_dir / name, assets / name)
    if figs:
        body.append('<div class="figs">' + "".join(
            f'<img src="{ASSETS}/{name}" alt="{hm.esc(name)}">' for name in figs) + "</div>")
    if summary:
        body.append(f"<details><summary>summary.md</summary><pre>{hm.esc(summary)}</pre></details>")

    excerpts = sorted(assets.glob(f"*/{EXCERPT_JSON}"))
    body.append("<h2>Tracks: listen</h2>")
    if not excerpts:
        body.append('<p class="note">No excerpts saved: this report was written without them '
                    "(re-run <code>iass evaluate</code> to capture them).</p>")
    else:
        body.append(f'<p class="note">Per track the excerpt where the corpus labels change most '
                    f"(at most {hm.EXCERPT_SECONDS:g} s), MP3 at 44.1 kHz, one gain per track; "
                    f"spectrograms on a log-frequency axis ({hm.SPEC_FMIN:g} Hz to "
                    f"{hm.SPEC_FMAX / 1000:g} kHz, {hm.SPEC_RANGE_DB:g} dB below the mixture's "
                    "peak). Activity: the run's probability, its threshold (dashed), the applied "
                    "decision (the median-filtered gate) and the corpus labels (shaded).</p>")
    for path in excerpts:
        body += _track_section(path, df)
    atomic_write_text(html_dir / INDEX, hm.page(f"Evaluation {out_dir.name}", body))
    log.debug("HTML report: %s (%.1f MB)", html_dir / INDEX, hm.dir_size(html_dir) / 1e6)
    return html_dir / INDEX


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _intro(summary: str, metrics: dict, df) -> list[str]:
    bullets = [line[2:] for line in summary.splitlines() if line.startswith("- ")][:6]
    out = []
    if bullets:
        out.append("<ul>" + "".join(f"<li>{hm.esc(b.replace('`', ''))}</li>" for b in bullets) + "</ul>")
    else:
        out.append(f'<p class="note">{df["track_id"].n_unique()} tracks</p>')
    return out


def _median_table(part, methods: list[str], targets: list[str], metric: str) -> str:
    import polars as pl

    rows, best = [], []
    for target in [*targets, "all"]:
        sub = part if target == "all" else part.filter(pl.col("target") == target)
        values = []
        for m in methods:
            v = sub.filter((pl.col("method") == m) & pl.col("value").is_not_nan())["value"]
            values.append(float(v.median()) if v.len() else float("nan"))
        if all(np.isnan(values)):
            continue
        cand = [i for i, m in enumerate(methods) if m not in REFERENCE_METHODS and not np.isnan(values[i])]
        pick = set()
        if cand:
            key = min if metric in LOWER_IS_BETTER else max
            pick = {key(cand, key=lambda i: values[i]) + 1}
        rows.append([target, *(hm.fmt(v) for v in values)])
        best.append(pick)
    arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    if not rows:
        return '<p class="note">no value on any track (e.g. EPS: no method muted a sounding target)</p>'
    return hm.table([f"target ({arrow})", *methods], rows, best)


def _track_section(meta_path: Path, df) -> list[str]:
    import polars as pl

    meta = json.loads(meta_path.read_text())
    root = meta_path.parent
    rel = f"{ASSETS}/{root.name}"
    tid = meta["track_id"]
    t0, t1 = meta["start_s"], meta["start_s"] + meta["seconds"]
    out = [f'<section class="track" id="{hm.esc(tid)}">',
           f"<h2>{hm.esc(tid)} <span class=\"muted\">({hm.esc(meta.get('source') or '')}; excerpt "
           f"{t0:.1f}–{t1:.1f} s)</span></h2>",
           '<div class="players">',
           hm.player("mixture", f"{rel}/{meta['mixture']}.mp3", f"{rel}/{meta['mixture']}.jpg"),
           "</div>"]
    arrays = dict(np.load(root / ACTIVITY_NPZ)) if (root / ACTIVITY_NPZ).is_file() else {}
    track_df = df.filter(pl.col("track_id") == tid)
    for t, entry in meta["targets"].items():
        cards = [hm.player("reference", f"{rel}/{entry['reference']}.mp3",
                           f"{rel}/{entry['reference']}.jpg", title=f"{tid} {t}: reference")]
        for m in entry["methods"]:
            cards.append(hm.player(m["label"], f"{rel}/{m['file']}.mp3", f"{rel}/{m['file']}.jpg",
                                   title=f"{tid} {t}: {m['label']}"))
        plot = _activity_plot(root, t, meta, arrays)
        side = []
        if plot is not None:
            side.append(f'<div class="activity"><img src="{rel}/{plot}" alt="activity of {hm.esc(t)}"></div>')
        side.append(_track_scores(track_df, t))
        out += [f"<h3>{hm.esc(t)}</h3>", '<div class="target">',
                '<div class="players">', *cards, "</div>", "<div>", *side, "</div>", "</div>"]
    out.append("</section>")
    return out


def _track_scores(track_df, target: str) -> str:
    import polars as pl

    sub = track_df.filter((pl.col("target") == target) & pl.col("metric").is_in(TRACK_METRICS))
    if not sub.height:
        return '<p class="note">not scored on this track</p>'
    rows = []
    for m in sub["method"].unique(maintain_order=True).to_list():
        vals = {r["metric"]: r["value"] for r in sub.filter(pl.col("method") == m).iter_rows(named=True)}
        rows.append([m, *(hm.fmt(vals.get(k)) for k in TRACK_METRICS)])
    return hm.table(["method", "SDR dB", "SIR dB", "PES dB"], rows)


def _activity_plot(root: Path, target: str, meta: dict, arrays: dict) -> str | None:
    """``<target>/activity.png``: the corpus labels (shaded, hatched where unknown), each run's
    probability, threshold and decision over the excerpt. None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = arrays.get(f"label/{target}")
    runs = [(name, r) for name, r in meta.get("runs", {}).items() if f"prob/{name}/{target}" in arrays]
    if label is None and not runs:
        return None
    hop, sr, t0 = meta["hop"], meta["sample_rate"], meta["start_s"]
    fig, ax = plt.subplots(figsize=(5.6, 2.1), dpi=100)
    if label is not None and label.size:
        x = t0 + np.arange(label.size) * hop / sr
        known = ~np.isnan(label)
        ax.fill_between(x, 0, np.where(known, label, 0), step="post", color="#8fd18f", alpha=0.6,
                        label="corpus label", linewidth=0)
        if (~known).any():
            ax.fill_between(x, 0, np.where(known, 0, 1), step="post", facecolor="none",
                            hatch="///", edgecolor="#bbb", linewidth=0, label="label unknown")
    colors = ["#1f5fbf", "#c0392b", "#8e44ad", "#d35400"]
    for k, (name, r) in enumerate(runs):
        c = colors[k % len(colors)]
        prob = arrays[f"prob/{name}/{target}"]
        run_hop = int(r.get("hop", hop))
        x = t0 + np.arange(prob.size) * run_hop / sr
        ax.plot(x, prob, color=c, linewidth=1.2, label=f"{r['label']} probability")
        dec = arrays.get(f"dec/{name}/{target}")
        if dec is not None and dec.size:
            ax.step(x, -0.08 - 0.1 * k + 0.06 * dec, where="post", color=c, linewidth=1.0,
                    label=f"{r['label']} decision")
        thr = r.get("thresholds", {}).get(target)
        if thr is not None:
            ax.axhline(thr, color=c, linestyle="--", linewidth=1.0, label=f"threshold {thr:.2f}")
    ax.set_xlim(t0, t0 + meta["seconds"])
    ax.set_ylim(-0.1 - 0.1 * max(1, len(runs)), 1.05)
    ax.set_yticks([0, 0.5, 1])
    ax.set_xlabel("time (s)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout(pad=0.3)
    name = f"{_file_slug(target)}/activity.png"
    fig.savefig(root / name)
    plt.close(fig)
    return name
