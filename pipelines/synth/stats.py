"""Arrangement statistics: how instruments enter and leave, real MedleyDB vs synthesized songs.

Per separation target (``taxonomy.targets``), over the tracks where it sounds:

* **full windows**: of the 1 s windows (``[k, k+1)`` s, complete ones only) in which the target
  is active in at least one frame, the share in which it is active in every frame. A song whose
  instruments start and stop often has many partly active windows.
* **active**: the share of frames in which the target is active.
* **entrances/min**: active segments that start after the track's first frame, per minute.
* **segments**: lengths (s) of the runs of active frames: 10th percentile, median, 90th
  percentile, and the time-weighted median (the length of the segment that a random active
  frame lies in: half the active time is in longer segments). Short blips dominate the count;
  the time-weighted median shows how long instruments really play.

Frame ``t`` lies at ``t * hop / sr`` (the corpus' ``center=True`` frames); a target is active
where any instrument under it is (the corpus' own reading, :meth:`Corpus.read_activity`).

Sources of activity:

* the **MedleyDB reference**: MedleyDB's official ``_ACTIVATION_CONF.lab`` files (264 tracks) and
  metadata from the ``medleydb-instruments`` wheel, resampled to the hop
  (:func:`iass.pipelines.activity.confidence_from_lab`) and binarised at 0.5; stems map to
  targets through ``datasets/sources/medleydb.yaml`` and the taxonomy;
* a **built corpus** (``manifest.json``): its activity tables, whatever the layout the songs came
  in: the labels a model trains on;
* a **source tree** (``iass synth`` output or a real copy) read by its adapter: its shipped labels
  (``notes.parquet`` of the native layout, ``_ACTIVATION_CONF.lab`` of the MedleyDB layouts) or,
  with ``labels="audio"``, activation confidence computed from its stems with the corpus'
  label params, as the corpus build does.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from iass.errors import ConfigError, CorpusError, SourceError
from iass.pipelines import activity as act
from iass.pipelines.corpus_format import num_frames

log = logging.getLogger(__name__)

WINDOW_S = 1.0
THRESHOLD = 0.5
REFERENCE = "MedleyDB"
#: the layout recorded in a synth tree's iass_synth.json -> the source adapter that reads it
LAYOUT_SOURCE = {"medleydb": "medleydb", "mixing_secrets": "mixing_secrets", "musdb-hq": "musdb",
                 "musdb-stems": "musdb", "native": "synth"}

Activity = dict[str, list[np.ndarray]]   # target -> one boolean frame array per track


@dataclass
class TargetStats:
    target: str
    tracks: int
    minutes: float
    full_windows: float          # share of sounding 1 s windows that are fully active
    active: float                # share of frames active
    entrances_per_min: float
    seg_p10: float
    seg_median: float
    seg_p90: float
    seg_time_median: float       # time-weighted median segment length


# ------------------------------------------------------------------------------- statistics
def windows(active: np.ndarray, hop: int, sr: int) -> tuple[int, int]:
    """(sounding, fully active) complete 1 s windows of one boolean frame array."""
    active = np.asarray(active, dtype=bool)
    if active.size == 0:
        return 0, 0
    centre = np.arange(active.size) * hop / sr
    n_win = int(centre[-1] // WINDOW_S)
    k = (centre // WINDOW_S).astype(np.int64)
    keep = k < n_win
    frames = np.bincount(k[keep], minlength=n_win)
    on = np.bincount(k[keep], weights=active[keep], minlength=n_win)
    return int((on > 0).sum()), int(((on == frames) & (frames > 0)).sum())


def segments(active: np.ndarray, hop: int, sr: int) -> tuple[np.ndarray, int]:
    """(lengths in s of the runs of active frames, how many start after the first frame)."""
    d = np.diff(np.r_[0, np.asarray(active, dtype=np.int8), 0])
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return (ends - starts) * hop / sr, int((starts > 0).sum())


def time_weighted_median(lengths: np.ndarray) -> float:
    """The length L such that half of the active time lies in segments no longer than L."""
    if lengths.size == 0:
        return float("nan")
    order = np.sort(lengths)
    cum = np.cumsum(order)
    return float(order[np.searchsorted(cum, 0.5 * cum[-1])])


def summarize(activity: Activity, hop: int, sr: int) -> dict[str, TargetStats]:
    """Per target statistics over the tracks in which it is active somewhere."""
    out = {}
    for target, arrays in activity.items():
        arrays = [a for a in arrays if a.any()]
        sounding = full = n_frames = n_active = entrances = 0
        lengths = []
        for a in arrays:
            s, f = windows(a, hop, sr)
            sounding, full = sounding + s, full + f
            seg, ent = segments(a, hop, sr)
            lengths.append(seg)
            entrances += ent
            n_frames, n_active = n_frames + a.size, n_active + int(a.sum())
        seg = np.concatenate(lengths) if lengths else np.zeros(0)
        minutes = n_frames * hop / sr / 60.0
        q = np.percentile(seg, [10, 50, 90]) if seg.size else [float("nan")] * 3
        out[target] = TargetStats(
            target=target, tracks=len(arrays), minutes=round(minutes, 3),
            full_windows=full / sounding if sounding else float("nan"),
            active=n_active / n_frames if n_frames else float("nan"),
            entrances_per_min=entrances / minutes if minutes else float("nan"),
            seg_p10=float(q[0]), seg_median=float(q[1]), seg_p90=float(q[2]),
            seg_time_median=time_weighted_median(seg))
    return out


def segment_lengths(activity: Activity, hop: int, sr: int) -> dict[str, np.ndarray]:
    return {t: np.concatenate([segments(a, hop, sr)[0] for a in arrays] or [np.zeros(0)])
            for t, arrays in activity.items()}


# ----------------------------------------------------------------------------------- readers
def _targets() -> tuple[str, ...]:
    from iass.pipelines.taxonomy import load_taxonomy

    return load_taxonomy().targets


def _target_stems(instrument_of: Mapping[str, str]) -> dict[str, list[str]]:
    """target -> stem ids whose canonical instrument lies under it."""
    from iass.pipelines.taxonomy import load_taxonomy

    tax = load_taxonomy()
    out: dict[str, list[str]] = {}
    for stem, inst in instrument_of.items():
        for target in tax.targets:
            if tax.covers(target, inst):
                out.setdefault(target, []).append(stem)
    return out


def medleydb_reference(hop: int = 1024, sr: int = 44100,
                       annotations_dir: str | Path | None = None) -> Activity:
    """MedleyDB's activation annotations (the wheel's, or ``annotations_dir`` with the metadata
    in ``../metadata``), per target, binarised at 0.5 on the frames of ``hop``."""
    import yaml

    from iass.pipelines.sources.medleydb import packaged_annotations_dir
    from iass.pipelines.taxonomy import stem_instrument

    ann = Path(annotations_dir) if annotations_dir else packaged_annotations_dir()
    if ann is None or not ann.is_dir():
        raise SourceError("MedleyDB annotations not found: install the medleydb-instruments "
                          "wheel (make setup) or pass the folder of the _ACTIVATION_CONF.lab files")
    meta_dir = ann.parent / "metadata"
    out: Activity = {t: [] for t in _targets()}
    labs = sorted(ann.glob("*_ACTIVATION_CONF.lab"))
    for lab in labs:
        nid = lab.name[: -len("_ACTIVATION_CONF.lab")]
        meta_path = meta_dir / f"{nid}_METADATA.yaml"
        if not meta_path.is_file():
            log.warning("%s: no metadata (%s); skipped", lab, meta_path)
            continue
        stems = (yaml.safe_load(meta_path.read_text()) or {}).get("stems") or {}
        by_target = _target_stems({sid: stem_instrument("medleydb", spec.get("instrument"), nid)
                                   for sid, spec in stems.items()})
        times, cols = act.read_activation_lab(lab)
        n = num_frames(int(round(float(times[-1]) * sr)), hop)
        times = act.exact_lab_times(times, sr)
        for target, ids in by_target.items():
            # a stem without a column (6 files lack one): the target's other stems still count
            curves = [cols[s] for s in ids if s in cols]
            if curves:
                conf = act.resample_confidence(times, np.max(curves, axis=0), n, hop, sr)
                out[target].append(conf >= THRESHOLD)
    log.debug("MedleyDB reference: %d annotation files in %s", len(labs), ann)
    return out


def activity_from_corpus(root: str | Path) -> tuple[Activity, int, int]:
    """(activity, hop, sample rate) of a built corpus: every track, every target it knows."""
    from iass.pipelines.corpus_format import Corpus

    try:
        corpus = Corpus(root)
    except (FileNotFoundError, ValueError) as exc:
        raise CorpusError(str(exc)) from None
    targets = corpus.taxonomy.targets
    out: Activity = {t: [] for t in targets}
    for tid in corpus.track_ids():
        acts = corpus.read_activity(tid, targets)
        for k, target in enumerate(targets):
            row = acts[k]
            if np.isnan(row).any():          # the corpus does not know this target here
                continue
            out[target].append(row == 1)
    sr = int(corpus.manifest["params"].get("sample_rate", 44100))
    return out, corpus.hop, sr


def tree_source(root: Path) -> str:
    """The adapter of a source tree: from ``iass_synth.json`` when the synthesizer wrote it."""
    from iass.pipelines.synth.generate import INFO_FILE

    info = root / INFO_FILE
    if info.is_file():
        layout = json.loads(info.read_text()).get("layout")
        if layout in LAYOUT_SOURCE:
            return LAYOUT_SOURCE[layout]
    return "medleydb"


def activity_from_tree(root: str | Path, source: str | None = None, labels: str = "shipped",
                       hop: int = 1024, sr: int = 44100, params: Mapping | None = None) -> Activity:
    """Activity of every track of a source tree, read by its adapter.

    ``labels``: ``shipped`` (exact notes of the native layout, a MedleyDB ``.lab``) or ``audio``
    (activation confidence from the stems, ``params`` = ``corpus.labels``, as the build does)."""
    import soundfile as sf

    from iass.pipelines.harmonize import harmonize
    from iass.pipelines.sources.base import TrackError, get_adapter
    from iass.pipelines.taxonomy import load_taxonomy

    if labels not in ("shipped", "audio"):
        raise ConfigError(f"labels {labels!r}: expected shipped or audio")
    root = Path(root)
    source = source or tree_source(root)
    adapter = get_adapter(source)
    tax = load_taxonomy()
    out: Activity = {t: [] for t in tax.targets}
    refs = list(adapter.discover(root))
    if not refs:
        raise SourceError(f"{root}: no {source} tracks found")
    unlabelled = []
    for ref in refs:
        try:
            track = adapter.read(ref)
        except TrackError as exc:
            log.warning("skipped: %s", exc)
            continue
        inst_of = {s.stem_id: s.extra.get("instrument") or s.labels[0] for s in track.stems}
        if labels == "audio":
            harm = harmonize(track, adapter.load(track, sr), tax)
            n = num_frames(harm.num_samples, hop)
            conf = act.confidence_from_audio(harm.instruments, hop, params, n)
            thr = act.label_params(params)["threshold"]
            for target in tax.targets:
                if not tax.target_known(target, harm.unknown_instruments):
                    continue
                parts = [conf[i] >= thr for i in conf if tax.covers(target, i)]
                if parts:
                    out[target].append(np.logical_or.reduce(parts))
            continue
        n = num_frames(sf.info(str(track.stems[0].path)).frames, hop)
        by_target = _target_stems(inst_of)
        if track.note_labels_path is not None:
            notes = act.read_note_labels(track.note_labels_path)
            for target, ids in by_target.items():
                iv = [x for s in ids for key in {s, inst_of[s]} for x in notes.get(key, [])]
                out[target].append(act.intervals_to_frames(iv, n, hop, sr))
        elif track.activation_conf_path is not None:
            for target, ids in by_target.items():
                conf = act.confidence_from_lab(track.activation_conf_path, {target: ids}, n, hop, sr)
                out[target].append(conf[target] >= THRESHOLD)
        else:
            unlabelled.append(track.native_id)
    if unlabelled:
        raise SourceError(f"{root}: {len(unlabelled)} tracks ship no activity labels "
                          f"(e.g. {unlabelled[0]}): use labels 'audio' (--labels audio), or build "
                          f"a corpus and read that")
    return out


def load_activity(path: str | Path, source: str | None = None, labels: str = "shipped",
                  hop: int = 1024, sr: int = 44100, params: Mapping | None = None
                  ) -> tuple[Activity, int, int, str]:
    """(activity, hop, sr, what was read) of a built corpus or a source tree."""
    path = Path(path)
    if not path.is_dir():
        raise SourceError(f"{path}: no such folder")
    if (path / "manifest.json").is_file():
        a, h, s = activity_from_corpus(path)
        return a, h, s, f"corpus {path} (its activity tables, hop {h})"
    src = source or tree_source(path)
    return (activity_from_tree(path, src, labels, hop, sr, params), hop, sr,
            f"{src} tree {path} ({labels} labels, hop {hop})")


# --------------------------------------------------------------- the .lab files' smoothing
def lab_smoothing(annotations_dir: str | Path | None = None, sr: int = 44100, hop: int = 2048,
                  cutoffs=np.arange(0.4, 2.01, 0.05)) -> dict:
    """How strongly MedleyDB's shipped confidence curves were low-passed (no audio needed).

    The logistic is inverted, ``H = center + ln(C / (1 - C)) / slope`` (the default label
    params), on every stretch of at least 256 frames with ``0.002 < C < 0.998`` (where the file's
    4 decimals keep ``H`` exact enough); the mean Welch spectrum of ``H`` (frame rate
    ``sr / hop``) is fitted, 0.15-4 Hz, by ``level * f**-alpha`` times the power response of a
    2nd-order Butterworth run forwards and backwards (``filtfilt``), for each cutoff (Hz).
    Returns the rms error (dB) and ``alpha`` per cutoff, and the spectrum itself."""
    import scipy.signal as sg

    from iass.pipelines.sources.medleydb import packaged_annotations_dir

    ann = Path(annotations_dir) if annotations_dir else packaged_annotations_dir()
    if ann is None or not ann.is_dir():
        raise SourceError("MedleyDB annotations not found: install medleydb-instruments (make setup)")
    p = act.DEFAULT_LABEL_PARAMS
    rate = sr / hop
    total, count, f = None, 0, None
    for lab in sorted(ann.glob("*_ACTIVATION_CONF.lab")):
        for c in act.read_activation_lab(lab)[1].values():
            d = np.diff(np.r_[0, ((c > 0.002) & (c < 0.998)).astype(np.int8), 0])
            for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
                if b - a < 256:
                    continue
                h = p["logistic_center"] + np.log(c[a:b] / (1 - c[a:b])) / p["logistic_slope"]
                f, psd = sg.welch(h - h.mean(), fs=rate, nperseg=256)
                total, count = (psd if total is None else total + psd), count + 1
    if not count:
        raise SourceError(f"{ann}: no confidence curves long enough to measure")
    psd = total / count
    sel = (f >= 0.15) & (f <= 4.0)
    obs, fit_f = 10 * np.log10(psd[sel]), f[sel]
    X = np.c_[np.ones(sel.sum()), -10 * np.log10(fit_f)]
    fits = []
    for fc in cutoffs:
        b, a = sg.butter(2, min(fc / (rate / 2), 0.99))
        resp = 40 * np.log10(np.abs(sg.freqz(b, a, worN=fit_f, fs=rate)[1]))
        coef = np.linalg.lstsq(X, obs - resp, rcond=None)[0]
        rms = float(np.sqrt(np.mean((X @ coef + resp - obs) ** 2)))
        fits.append({"cutoff_hz": round(float(fc), 3), "rms_db": rms, "alpha": float(coef[1])})
    return {"curves": count, "frame_rate": rate, "freq": f, "psd_db": 10 * np.log10(psd / psd[1]),
            "fits": fits, "best": min(fits, key=lambda r: r["rms_db"])}


# ------------------------------------------------------------------------------------ report
COLUMNS = ("dataset", "target", "tracks", "minutes", "full_windows", "active", "entrances_per_min",
           "seg_p10", "seg_median", "seg_p90", "seg_time_median")


def table_rows(stats: Mapping[str, Mapping[str, TargetStats]]) -> list[dict]:
    rows = []
    for target in _targets():
        for name, per_target in stats.items():
            if target in per_target:
                rows.append({"dataset": name, **asdict(per_target[target])})
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = ("| target | data | tracks | full 1 s windows | active | entrances/min | "
            "segment s p10 / median / p90 | time-weighted median s |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['dataset']} | {r['tracks']} | {100 * r['full_windows']:.0f} % | "
            f"{100 * r['active']:.0f} % | {r['entrances_per_min']:.2f} | "
            f"{r['seg_p10']:.1f} / {r['seg_median']:.1f} / {r['seg_p90']:.1f} | "
            f"{r['seg_time_median']:.1f} |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    import io

    from iass.io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def plot(lengths: Mapping[str, Mapping[str, np.ndarray]], stats: Mapping[str, Mapping[str, TargetStats]],
         path: Path) -> None:
    """One panel per target: the time-weighted distribution of active-segment lengths (share of
    active time in segments no longer than x), one line per dataset; the legend gives the
    share of fully active 1 s windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iass.io import atomic_path

    targets = _targets()
    fig, axes = plt.subplots(2, (len(targets) + 1) // 2, figsize=(13, 7.5), sharey=True)
    for ax, target in zip(axes.flat, targets):
        for k, (name, per_target) in enumerate(lengths.items()):
            seg = np.sort(per_target.get(target, np.zeros(0)))
            if seg.size == 0:
                continue
            share = np.cumsum(seg) / seg.sum()
            st = stats[name][target]
            style = {"color": "black", "lw": 2.2} if name == REFERENCE else {"lw": 1.6, "color": f"C{k}"}
            ax.step(np.r_[seg[0], seg], np.r_[0.0, share], where="post", **style,
                    label=f"{name}: {100 * st.full_windows:.0f} % full, {st.entrances_per_min:.1f} in/min")
        ax.set_xscale("log")
        ax.set_xlim(0.1, 1000)
        ax.set_title(target)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7.5, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("active segment length (s, log)")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of active time in segments <= x")
    for ax in list(axes.flat)[len(targets):]:
        ax.set_visible(False)
    fig.suptitle("How long instruments play: MedleyDB's annotations vs synthesized songs "
                 "(legend: share of fully active 1 s windows; entrances per minute)", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)


def arrangement_report(datasets: Mapping[str, str | Path], out: str | Path | None = None,
                       labels: str = "shipped", source: str | None = None, hop: int = 1024,
                       sr: int = 44100, params: Mapping | None = None,
                       reference: bool = True) -> dict:
    """Statistics of MedleyDB's annotations (``reference``) and of each ``name -> folder``;
    with ``out``: ``arrangement_stats.csv`` and ``arrangement_stats.png`` there."""
    stats, lengths, read = {}, {}, {}
    if reference:
        ref = medleydb_reference(hop, sr)
        stats[REFERENCE], lengths[REFERENCE] = summarize(ref, hop, sr), segment_lengths(ref, hop, sr)
        read[REFERENCE] = "MedleyDB _ACTIVATION_CONF.lab (medleydb-instruments), binarised at 0.5"
    for name, path in datasets.items():
        activity, h, s, what = load_activity(path, source, labels, hop, sr, params)
        stats[name], lengths[name], read[name] = summarize(activity, h, s), segment_lengths(activity, h, s), what
    rows = table_rows(stats)
    result = {"rows": rows, "table": markdown_table(rows), "read": read, "files": []}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out / "arrangement_stats.csv")
        plot(lengths, stats, out / "arrangement_stats.png")
        result["files"] = [str(out / "arrangement_stats.csv"), str(out / "arrangement_stats.png")]
    return result
