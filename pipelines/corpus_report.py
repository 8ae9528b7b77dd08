"""``iass corpus report``: a built corpus as a static page to look at and listen to.

``<out>/index.html`` with its images and audio in ``<out>/assets/`` (no server, nothing from the
network): what :func:`iass.pipelines.corpus_check.corpus_info` counts, as tables and bar plots
(hours per source and split, per instrument and split, the active share of each instrument),
the rejected tracks with their reasons (rejects.parquet), and a handful of tracks: per track an
excerpt (the window where the labels change most) with a player for the mixture and for each
stem, the stem's activity labels drawn over its spectrogram, so that a data engineer can see and
hear whether the labels are right.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from iass.io import atomic_write_text
from iass.pipelines import html_media as hm

log = logging.getLogger(__name__)

DEFAULT_OUT = "reports/corpus"
DEFAULT_TRACKS = 4
INDEX = "index.html"
ASSETS = "assets"
MAX_REJECTS = 500
MAX_STEMS = 16          # stems shown per track (the rest are listed)


def write_corpus_report(corpus_dir: str | Path, out_dir: str | Path = DEFAULT_OUT,
                        tracks: int = DEFAULT_TRACKS, seconds: float = hm.EXCERPT_SECONDS,
                        track_ids: list[str] | None = None) -> Path:
    """Write the page; returns the path of index.html. ``track_ids`` (else ``tracks`` of them,
    taken in turn from each source) are the tracks with players. Raises CorpusError for a
    directory that is not a built corpus."""
    from iass.errors import CorpusError
    from iass.pipelines.corpus_check import corpus_info
    from iass.pipelines.corpus_format import Corpus

    try:
        corpus = Corpus(corpus_dir)
        info = corpus_info(corpus_dir)
    except CorpusError:
        raise
    except (FileNotFoundError, ValueError) as exc:
        msg = str(exc)
        raise CorpusError(msg if str(corpus_dir) in msg else f"{corpus_dir}: {msg}") from exc
    out_dir = Path(out_dir)
    assets = out_dir / ASSETS
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)

    body = [f"<h1>Corpus {hm.esc(Path(corpus_dir).resolve().name)}</h1>",
            f"<ul><li>version <code>{hm.esc(info['corpus_version'][:12])}</code>, format "
            f"{hm.esc(info['format_version'])}, label hop {hm.esc(info['hop'])} samples</li>"
            f"<li>{info['tracks']} tracks, {info['hours']:.2f} h; {info['rejects']} rejected; "
            f"{info['duplicates']} duplicate group(s)</li></ul>"]
    body += _overview(corpus, info, assets)
    body += _rejects(corpus)
    chosen = track_ids if track_ids is not None else pick_tracks(corpus, tracks)
    body.append("<h2>Tracks: listen and check the labels</h2>")
    body.append(f'<p class="note">Per track the excerpt where the labels change most (at most '
                f"{seconds:g} s), MP3 at 44.1 kHz, one gain per track. Over each stem's "
                f"spectrogram (log frequency, {hm.SPEC_FMIN:g} Hz to {hm.SPEC_FMAX / 1000:g} kHz, "
                f"{hm.SPEC_RANGE_DB:g} dB below the mixture's peak) the strip at the top is its "
                "label: green = active, dark = silent, hatched = unknown; silent frames are also "
                "dimmed.</p>")
    if not chosen:
        body.append('<p class="note">The corpus has no tracks.</p>')
    for tid in chosen:
        body += _track_section(corpus, tid, assets, seconds)
    index = out_dir / INDEX
    atomic_write_text(index, hm.page(f"Corpus {Path(corpus_dir).resolve().name}", body))
    log.debug("corpus report: %s (%.1f MB)", index, hm.dir_size(out_dir) / 1e6)
    return index


def pick_tracks(corpus, n: int) -> list[str]:
    """``n`` tracks, in turn from each source (sorted), each source's in id order."""
    by_source: dict[str, list[str]] = {}
    for row in corpus.tracks.sort("track_id").iter_rows(named=True):
        by_source.setdefault(row["source"], []).append(row["track_id"])
    out: list[str] = []
    queues = [list(v) for _, v in sorted(by_source.items())]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


# ----------------------------------------------------------------------------- overview
def _overview(corpus, info: dict, assets: Path) -> list[str]:
    import polars as pl

    out = ["<h2>Hours</h2>"]
    rows = info["by_source_split"]
    out.append(hm.table(["source", "split", "tracks", "hours"],
                        [[r["source"], r["split"], r["tracks"], hm.fmt(r["hours"], 3)] for r in rows]))
    stems = corpus.stems
    tracks = corpus.tracks
    figs = []
    if rows:
        figs.append(_stacked_bars(
            "hours per source and split", {(r["source"], r["split"]): r["hours"] for r in rows},
            assets / "hours_source_split.png", horizontal=False))
    inst_rows = []
    if stems.height and tracks.height:
        joined = stems.join(tracks.select("track_id", "split", "sample_rate"), on="track_id", how="left")
        per = (joined.group_by(["instrument", "split"])
               .agg((pl.col("num_samples") / pl.col("sample_rate")).sum().alias("s"))
               .sort(["instrument", "split"]))
        hours = {(r["instrument"], r["split"]): r["s"] / 3600 for r in per.iter_rows(named=True)}
        figs.append(_stacked_bars("stem hours per instrument and split", hours,
                                  assets / "hours_instrument.png", horizontal=True))
        total = {}
        for (inst, _), h in hours.items():
            total[inst] = total.get(inst, 0.0) + h
        names = sorted(set(total) | set(info["instruments"]) | set(info["unknown_in_tracks"]))
        share = {}
        for name in names:
            s = info["instruments"].get(name, {})
            frac = s.get("active_fraction")
            if frac is not None:
                share[name] = frac
            inst_rows.append([name, s.get("tracks", 0), hm.fmt(total.get(name), 3),
                              hm.fmt(None if frac is None else frac * total.get(name, 0.0), 3),
                              hm.fmt(frac, 3), info["unknown_in_tracks"].get(name, 0)])
        if share:
            figs.append(_share_bars(share, assets / "activity_share.png"))
    out.append('<div class="figs">' + "".join(
        f'<img src="{ASSETS}/{p.name}" alt="{hm.esc(p.stem)}">' for p in figs) + "</div>")
    if inst_rows:
        out.append("<h2>Instruments</h2>")
        out.append('<p class="note">active share = labelled-active frames over all labelled '
                   "frames of the instrument's stems; unknown in = tracks whose source does not "
                   "annotate it (it may sound there, hidden in another stem).</p>")
        out.append(hm.table(["instrument", "tracks", "stem hours", "active hours", "active share",
                             "unknown in"], inst_rows))
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SPLIT_COLORS = {"train": "#4c72b0", "valid": "#dd8452", "test": "#55a868"}


def _stacked_bars(title: str, values: dict[tuple[str, str], float], path: Path,
                  horizontal: bool) -> Path:
    plt = _plt()
    cats = sorted({c for c, _ in values})
    splits = sorted({s for _, s in values}, key=lambda s: (list(SPLIT_COLORS).index(s)
                                                             if s in SPLIT_COLORS else 9, s))
    if horizontal:
        fig, ax = plt.subplots(figsize=(6.0, max(2.0, 0.26 * len(cats) + 1.0)), dpi=100)
    else:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(cats) + 1.5), 3.2), dpi=100)
    base = np.zeros(len(cats))
    for s in splits:
        v = np.array([values.get((c, s), 0.0) for c in cats])
        kw = {"color": SPLIT_COLORS.get(s), "label": s}
        if horizontal:
            ax.barh(cats, v, left=base, **kw)
        else:
            ax.bar(cats, v, bottom=base, **kw)
        base += v
    if horizontal:
        ax.invert_yaxis()
        ax.set_xlabel("hours")
    else:
        ax.set_ylabel("hours")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    # beside the axes, never over a bar
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _share_bars(share: dict[str, float], path: Path) -> Path:
    plt = _plt()
    names = sorted(share)
    fig, ax = plt.subplots(figsize=(6.0, max(2.0, 0.26 * len(names) + 1.0)), dpi=100)
    ax.barh(names, [share[n] for n in names], color="#8fd18f")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("active share of labelled frames")
    ax.set_title("activity per instrument", fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _rejects(corpus) -> list[str]:
    rej = corpus.rejects
    out = [f"<h2>Rejected tracks ({rej.height})</h2>"]
    if not rej.height:
        out.append('<p class="note">none</p>')
        return out
    by_stage = rej.group_by("stage").len().sort("len", descending=True)
    out.append('<p class="note">by stage: ' + ", ".join(
        f"{hm.esc(r['stage'])} {r['len']}" for r in by_stage.iter_rows(named=True)) + "</p>")
    rows = [[r["source"], r["native_id"], r["stage"], r["reason"]]
            for r in rej.head(MAX_REJECTS).iter_rows(named=True)]
    out.append(hm.table(["source", "track", "stage", "reason"], rows))
    if rej.height > MAX_REJECTS:
        out.append(f'<p class="note">… and {rej.height - MAX_REJECTS} more in rejects.parquet</p>')
    return out


# -------------------------------------------------------------------------------- tracks
def _track_section(corpus, tid: str, assets: Path, seconds: float) -> list[str]:
    from iass.pipelines.corpus_format import slugify

    row = corpus.track(tid)
    sr, hop, n = int(row["sample_rate"]), int(corpus.hop), int(row["num_samples"])
    instruments = sorted(corpus.stems.filter(corpus.stems["track_id"] == tid)["instrument"].to_list())
    labels = corpus.read_activity(tid, instruments) if instruments else np.zeros((0, 0))
    start, length = hm.pick_excerpt(labels, hop, n, sr, seconds)
    mixture = corpus.read_mixture(tid, start, length)
    shown = instruments[:MAX_STEMS]
    stems = {inst: corpus.read_instrument(tid, inst, start, length) for inst in shown}
    peak = max([float(np.abs(mixture).max()) if mixture.size else 0.0]
               + [float(np.abs(a).max()) if a.size else 0.0 for a in stems.values()])
    gain = 0.99 / peak if peak > 0.99 else 1.0
    ref_power = hm.peak_power(mixture * gain, sr)
    folder = assets / slugify(tid, max_len=80, empty="track")
    rel = f"{ASSETS}/{folder.name}"
    items = [(mixture * gain, folder / "mixture.mp3")]
    hm.save_spectrogram(mixture * gain, sr, folder / "mixture.jpg", ref_power)
    cards = [hm.player("mixture", f"{rel}/mixture.mp3", f"{rel}/mixture.jpg")]
    f0 = start // hop
    for k, inst in enumerate(shown):
        name = slugify(inst, max_len=64, empty="stem")
        audio = stems[inst] * gain
        items.append((audio, folder / f"{name}.mp3"))
        lab = labels[instruments.index(inst), f0: f0 + (length + hop - 1) // hop]
        _labelled_spectrogram(audio, sr, lab, hop, start / sr, folder / f"{name}.jpg", ref_power)
        share = np.nanmean(lab) if np.isfinite(lab).any() else float("nan")
        cards.append(hm.player(f"{inst} (active {hm.fmt(share * 100, 0)} %)" if np.isfinite(share)
                               else f"{inst} (labels unknown)",
                               f"{rel}/{name}.mp3", f"{rel}/{name}.jpg", "labelled"))
    hm.encode_mp3_many(items, sr)
    more = instruments[MAX_STEMS:]
    unknown = row.get("unknown_instruments") or []
    out = [f'<section class="track" id="{hm.esc(tid)}">',
           f"<h3>{hm.esc(tid)} <span class=\"muted\">({hm.esc(row['source'])}, {hm.esc(row['split'])}; "
           f"{hm.esc(row.get('artist') or '')} – {hm.esc(row.get('title') or '')}; excerpt "
           f"{start / sr:.1f}–{(start + length) / sr:.1f} s of {n / sr:.1f} s; labels: "
           f"{hm.esc(row.get('activity_method') or '?')})</span></h3>"]
    if unknown or more:
        notes = []
        if unknown:
            notes.append("not annotated by the source: " + ", ".join(unknown))
        if more:
            notes.append(f"{len(more)} more stems not shown: " + ", ".join(more))
        out.append(f'<p class="note">{hm.esc("; ".join(notes))}</p>')
    out += ['<div class="players">', *cards, "</div>", "</section>"]
    return out


def _labelled_spectrogram(audio: np.ndarray, sr: int, labels: np.ndarray, hop: int, t0: float,
                          path: Path, ref_power: float) -> Path:
    """The stem's spectrogram with its labels: a strip at the top (green active, dark silent,
    hatched unknown) and the silent frames dimmed."""
    plt = _plt()
    db = hm.spectrogram_db(audio, sr, ref_power)
    dur = len(audio) / sr
    fig = plt.figure(figsize=(3.6, 1.25), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(db, origin="lower", aspect="auto", cmap=hm.SPEC_CMAP, vmin=-hm.SPEC_RANGE_DB, vmax=0,
              extent=(t0, t0 + dur, 0, 1), interpolation="nearest")
    lab = np.asarray(labels, dtype=np.float64)
    if lab.size:
        cls = np.where(np.isnan(lab), 2, (np.nan_to_num(lab) >= 0.5).astype(int))  # 0 silent 1 active 2 unknown
        cuts = np.flatnonzero(np.diff(cls)) + 1
        for a_i, b_i in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [lab.size]])):
            a, b = t0 + a_i * hop / sr, min(t0 + b_i * hop / sr, t0 + dur)
            c = cls[a_i]
            if c == 2:
                ax.fill_between([a, b], 0.86, 1.0, facecolor="#999", edgecolor="#eee", hatch="///",
                                linewidth=0)
            elif c == 1:
                ax.fill_between([a, b], 0.88, 1.0, color="#3ddc5a", linewidth=0)
            else:
                ax.fill_between([a, b], 0.88, 1.0, color="#202020", linewidth=0)
                ax.fill_between([a, b], 0.0, 0.88, color="black", alpha=0.45, linewidth=0)
    ax.set_xlim(t0, t0 + dur)
    ax.set_ylim(0, 1)
    ax.axis("off")
    fig.savefig(path, pil_kwargs={"quality": 80})
    plt.close(fig)
    return path
