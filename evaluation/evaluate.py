"""``iass evaluate``: separate the test tracks of a corpus with each run, score every method.

Methods per run: an IASS run (a separator with activity) is scored twice from one pass of its
network, with activity weighting (``--weighting``, the paper's method) and without (and, with
``evaluate.oracle_gate``, gated by the corpus' activity labels: the best a detector's gate can
do); an Open-Unmix run as is. Beside them, two references on the same tracks, targets and windows: the ideal binary
mask (``IBM``, upper bound) and the mixture itself (``input-SDR``, lower bound).

Scores (see :mod:`iass.evaluation.metrics`): BSS Eval v4 SDR / SIR / SAR / ISR per track and
target, 1 s windows, median over the windows where the target and the rest of the mixture both
sound, then median over tracks in the report. A target is scored on a track only when the corpus
knows its audio (``Corpus.target_known``: not MUSDB's guitars or piano, hidden in ``other``) and,
for BSS Eval, it is not silent throughout. BSS Eval drops the windows where the target is silent,
so it cannot see what activity weighting is for; PES and EPS (Schulze-Forster et al. 2019) score
exactly those windows: the estimate's energy where the target is silent (leakage) and the
target's energy where the estimate is silent (what muting lost). Activity (IASS runs):
frame-level precision, recall and F1 of the decision actually applied (threshold + median filter) and ROC-AUC of the probability, against the
corpus labels, skipping unknown frames. Multi-pitch (IASS runs with a pitch head, on the tracks
whose pitch the corpus knows): ``mir_eval.multipitch`` precision / recall / accuracy / F-measure
(:mod:`iass.evaluation.pitch`).

Tracks are scored in parallel worker processes; everything is read through
:class:`iass.pipelines.corpus_format.Corpus`.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from iass.errors import ConfigError, CorpusError
from iass.evaluation.separate import ORACLE, SeparationConfig

log = logging.getLogger(__name__)

BSS_METRICS = ("SDR", "SIR", "SAR", "ISR")
ACTIVITY_METRICS = ("precision", "recall", "f1", "auc")
# SDR split by what the labels say of each scored window: the target partly silent in it (where
# a gate that closes on silence can change the estimate) or active throughout; with the counts
WINDOW_CLASS_METRICS = ("SDR_partial", "windows_partial", "SDR_active", "windows_active")
IBM = "IBM"
INPUT = "input-SDR"


@dataclass(frozen=True)
class RunSpec:
    """A trained run to evaluate: a run directory (loaded in each worker) or, for tests and
    library use, a separator object implementing the inference protocol (picklable)."""

    source: Any
    label: str = ""          # filled by :func:`describe_runs`
    kind: str = ""           # iass | umx | other
    targets: tuple[str, ...] = ()
    has_activity: bool = False
    has_pitch: bool = False  # an IASS run with a pitch head (scored by mir_eval.multipitch)
    sample_rate: int = 44100
    hop: int = 1024
    thresholds: tuple[float, ...] | None = None   # per target, tuned on a held-out split


@dataclass(frozen=True)
class Method:
    label: str               # as shown in the report: 'IASS (weighted)', 'Open-Unmix', 'IBM', ...
    key: str                 # slug for metrics.json
    run: str                 # run name ('' for references)
    run_index: int | None    # index into the runs (None for references)
    weighting: str = "none"


@dataclass
class EvaluateConfig:
    split: str = "test"
    separation: SeparationConfig = field(default_factory=SeparationConfig)
    n_fft: int | None = None  # STFT of the IBM reference (None: the first run's, else 4096)
    hop: int | None = None
    win_seconds: float = 1.0
    workers: int = 2
    device: str = "cpu"
    checkpoint: str = "best"
    threshold_split: str | None = None  # tune each IASS run's per-target thresholds on this split
    threshold_metric: str = "sdr"       # sdr (the gate that separates best) | safe (ties -> 0.5) | f1
    oracle_gate: bool = False           # also score each IASS run gated by the corpus' labels
    targets: tuple[str, ...] | None = None
    limit: int | None = None  # evaluate the first N tracks only (smoke runs)
    html: bool = True         # also write html/index.html (iass.evaluation.html_report)
    html_assets: str | None = None  # where workers save the excerpts (set by evaluate())
    figure: str = "fig4"      # figure.png in the paper's layout: fig3 (per metric) | fig4 (per instrument)


def slug(text: str) -> str:
    """The key of a method or run in metrics.json: ``'IASS (weighted)'`` -> ``iass_weighted``."""
    from iass.pipelines.corpus_format import slugify

    return slugify(text, max_len=None, sep="_", fold=False, empty="")


# ------------------------------------------------------------------------------- runs
_SEPARATORS: dict[Any, Any] = {}


def _load(source, device: str = "cpu", checkpoint: str = "best"):
    """The separator of a run (cached per process)."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    key = (str(source), device, checkpoint)
    if key not in _SEPARATORS:
        from iass.training.inference import load_separator

        _SEPARATORS[key] = load_separator(source, device=device, checkpoint=checkpoint)
    return _SEPARATORS[key]


def _kind(sep) -> str:
    kind = str(getattr(sep, "kind", "") or "").lower()
    if kind in ("iass", "umx"):
        return kind
    return "iass" if sep.has_activity else "other"


def describe_runs(sources: list, device: str = "cpu", checkpoint: str = "best") -> list[RunSpec]:
    """Load each run once in this process to learn its kind, targets and STFT."""
    specs = []
    for source in sources:
        sep = _load(source, device, checkpoint)
        kind = _kind(sep)
        base = {"iass": "IASS", "umx": "Open-Unmix"}.get(kind, str(sep.name))
        specs.append(RunSpec(source, base, kind, tuple(sep.targets), bool(sep.has_activity),
                             bool(getattr(sep, "has_pitch", False)), int(sep.sample_rate), int(sep.hop)))
    return specs


def plan_methods(runs: list[RunSpec], weighting: str, oracle_gate: bool = False) -> list[Method]:
    """The methods of the report, in order: the runs' variants (with ``oracle_gate``, an IASS
    run's masks gated by the corpus labels too), then IBM and input-SDR."""
    methods: list[Method] = []
    counts: dict[str, int] = {}
    for spec in runs:
        counts[spec.label] = counts.get(spec.label, 0) + 1
    for i, spec in enumerate(runs):
        name = _run_name(spec.source)
        suffix = f" [{name}]" if counts[spec.label] > 1 else ""
        if spec.has_activity:
            if weighting != "none":
                label = f"{spec.label} (weighted){suffix}"
                methods.append(Method(label, slug(label), name, i, weighting))
            label = f"{spec.label} (unweighted){suffix}"
            methods.append(Method(label, slug(label), name, i, "none"))
            if oracle_gate:
                label = f"{spec.label} (oracle gate){suffix}"
                methods.append(Method(label, slug(label), name, i, ORACLE))
        else:
            label = f"{spec.label}{suffix}"
            methods.append(Method(label, slug(label), name, i, "none"))
    methods.append(Method(IBM, "ibm", "", None))
    methods.append(Method(INPUT, "input_sdr", "", None))
    return methods


def _run_name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).resolve().name
    return str(getattr(source, "name", "separator"))


# ------------------------------------------------------------------------- one track
@dataclass
class _Track:
    """What every method of one track is scored against, read once from the corpus."""

    track_id: str
    base: dict                       # the columns every row of the track carries
    sr: int
    hop: int                         # the corpus' label hop
    mixture: np.ndarray              # (n, 2)
    known: list[str]                 # targets whose audio the corpus knows
    scored: list[str]                # known targets that sound somewhere (BSS Eval)
    references: dict[str, np.ndarray]
    truth_of: dict[str, np.ndarray]  # activity labels per target (NaN: unknown)
    pitch_of: dict[str, np.ndarray] = field(default_factory=dict)  # known piano rolls (T, 88)


def _read_track(corpus, track_id: str, runs: list[RunSpec], targets: list[str]) -> _Track:
    row = corpus.track(track_id)
    known = [t for t in targets if corpus.target_known(track_id, t)]
    # the track's activity labels, read once: window classes, the oracle gate, activity scores
    names = list(dict.fromkeys([*targets, *(t for r in runs for t in r.targets)]))
    references = {t: corpus.read_target(track_id, t) for t in known}
    # BSS metrics need the target to sound somewhere; PES/EPS are scored on every known target
    # (a track without the target is where leakage and muting matter most)
    pitch_of = {}
    if any(getattr(r, "has_pitch", False) for r in runs):   # only a run with a pitch head needs them
        from iass.evaluation.pitch import track_pitch

        pitch_of = track_pitch(corpus, track_id, targets)
    return _Track(track_id, {"track_id": track_id, "source": row["source"]},
                  int(row["sample_rate"]), int(corpus.hop), corpus.read_mixture(track_id), known,
                  [t for t in known if np.any(references[t] != 0)], references,
                  dict(zip(names, corpus.read_activity(track_id, names))), pitch_of)


def _separate_runs(track: _Track, runs: list[RunSpec], methods: list[Method],
                   config: EvaluateConfig) -> tuple[dict, dict, dict]:
    """Every run's estimates ({method label: {target: (n, 2)}}, one pass of each network for all
    its weightings), the activity of the runs that have it ({run: {target: (prob, dec, hop)}})
    and the pitch of the runs with a pitch head ({run: {target: (prob (T, 88), hop)}})."""
    from iass.evaluation.separate import separate_variants

    estimates: dict[str, dict[str, np.ndarray]] = {}
    activity: dict[str, dict] = {}
    pitch: dict[str, dict] = {}
    by_run: dict[int, list[Method]] = {}
    for m in methods:
        if m.run_index is not None:
            by_run.setdefault(m.run_index, []).append(m)
    for i, ms in by_run.items():
        spec = runs[i]
        sep = _load(spec.source, config.device, config.checkpoint)
        if int(sep.sample_rate) != track.sr:
            raise ValueError(f"{_run_name(spec.source)}: model rate {sep.sample_rate} Hz != corpus "
                             f"rate {track.sr} Hz ({track.track_id})")
        weightings = tuple(dict.fromkeys(m.weighting for m in ms))
        sep_config = (config.separation if spec.thresholds is None
                      else replace(config.separation, threshold=spec.thresholds))
        oracle = None
        if ORACLE in weightings:       # the labels as the gate (NaN: unknown, left open)
            oracle = np.stack([track.truth_of[t] for t in sep.targets])
        results = separate_variants(track.mixture, sep, sep_config, weightings, oracle)
        for m in ms:
            res = results[m.weighting]
            estimates[m.label] = {t: res.estimates[k] for k, t in enumerate(res.targets)}
        first = results[weightings[0]]
        if first.probability is not None:
            activity[ms[0].run] = {t: (first.probability[k], first.decision[k], int(sep.hop))
                                   for k, t in enumerate(first.targets)}
        if first.pitch is not None:
            pitch[ms[0].run] = {t: (first.pitch[k], int(sep.hop)) for k, t in enumerate(first.targets)}
    return estimates, activity, pitch


def _reference_estimates(track: _Track, config: EvaluateConfig) -> dict:
    """The IBM (upper bound) and the mixture itself (lower bound) for every known target."""
    from iass.evaluation.references import ideal_binary_mask

    if not track.known:
        return {}
    mixture, refs = track.mixture, track.references
    ibm = ideal_binary_mask(lambda s, c: mixture[s: s + c],
                            [(lambda s, c, r=refs[t]: r[s: s + c]) for t in track.known],
                            len(mixture), config.n_fft or 4096, config.hop or track.hop)
    return {IBM: {t: ibm[k] for k, t in enumerate(track.known)},
            INPUT: {t: mixture for t in track.known}}


def _target_scores(track: _Track, t: str, stacked: np.ndarray, win: int) -> tuple[dict, tuple]:
    """{metric: (n_methods,)} of one target (PES/EPS always; BSS Eval and the window classes when
    it sounds) and the window-class metrics it has."""
    from iass.evaluation.metrics import score_target, silence_scores, window_activity, window_bounds

    ref = track.references[t]
    scores = silence_scores(ref, stacked, win, win)
    if t not in track.scored:
        return scores, ()
    # every method's estimate of this target in one call: the filters' system is solved once
    bss = score_target(ref, track.mixture - ref, stacked, win, win)
    scores.update(bss.medians())
    truth = track.truth_of[t]
    if np.isnan(truth).all():
        return scores, ()
    share = window_activity(truth, track.hop, window_bounds(min(len(ref), stacked.shape[1]), win, win))
    if len(share) != bss.sdr.shape[1]:
        raise AssertionError(f"{track.track_id} {t}: {len(share)} label windows != "
                             f"{bss.sdr.shape[1]} BSS windows")
    with np.errstate(invalid="ignore"):
        for name, select in (("partial", (share > 0) & (share < 1)), ("active", share == 1)):
            scores[f"SDR_{name}"], scores[f"windows_{name}"] = bss.median_where(select)
    return scores, WINDOW_CLASS_METRICS


def _bss_rows(track: _Track, estimates: dict, methods: list[Method], config: EvaluateConfig) -> list[dict]:
    from iass.evaluation.metrics import SILENCE_METRICS

    win = int(round(config.win_seconds * track.sr))
    rows = []
    for t in track.known:
        labels = [m.label for m in methods if t in estimates.get(m.label, {})]
        stacked = np.stack([estimates[lab][t] for lab in labels])
        scores, extra = _target_scores(track, t, stacked, win)
        for e, lab in enumerate(labels):
            run = next(m.run for m in methods if m.label == lab)
            for metric in (BSS_METRICS if t in track.scored else ()) + extra + SILENCE_METRICS:
                rows.append({**track.base, "target": t, "method": lab, "run": run,
                             "metric": metric, "value": float(scores[metric][e])})
    return rows


def _activity_rows(track: _Track, activity: dict, methods: list[Method],
                   targets: list[str]) -> tuple[list[dict], dict]:
    """Per-track activity scores of every run and target, and the labelled frames (pooled over
    the corpus by the report)."""
    from iass.evaluation.metrics import activity_scores

    rows = []
    frames: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for run_name, per_target in activity.items():
        label = next(m.label for m in methods if m.run == run_name and m.run_index is not None)
        for t, (prob, dec, hop) in per_target.items():
            if t not in targets:
                continue
            if hop != track.hop:
                raise ValueError(f"{run_name}: model hop {hop} != corpus label hop {track.hop}; "
                                 "activity cannot be scored frame by frame")
            truth = track.truth_of[t]
            m_frames = min(len(truth), len(prob))
            truth, p, d = truth[:m_frames], prob[:m_frames], dec[:m_frames]
            if np.isnan(truth).all():
                continue                                  # the corpus does not annotate it
            s = activity_scores(p, d, truth)
            for metric in ACTIVITY_METRICS:
                rows.append({**track.base, "target": t, "method": _activity_label(label),
                             "run": run_name, "metric": metric, "value": float(s[metric])})
            labelled = ~np.isnan(truth)
            frames[(run_name, t)] = (p[labelled], d[labelled], truth[labelled])
    return rows, frames


def score_track(corpus_root: str, track_id: str, runs: list[RunSpec], methods: list[Method],
                targets: list[str], config: EvaluateConfig) -> dict:
    """Everything for one track: BSS rows, activity rows, and the per-frame activity of every
    IASS run (for scores pooled over the corpus). Runs in a worker process."""
    from iass.pipelines.corpus_format import Corpus

    track = _read_track(Corpus(corpus_root), track_id, runs, targets)
    estimates, activity, pitch = _separate_runs(track, runs, methods, config)
    estimates.update(_reference_estimates(track, config))
    if config.html_assets:   # HTML report hook: save the excerpt while the estimates exist
        from iass.evaluation.html_report import capture_track

        capture_track(config.html_assets, track, estimates, activity, runs, methods, config)
    rows = _bss_rows(track, estimates, methods, config)
    activity_rows, frames = _activity_rows(track, activity, methods, targets)
    pitch_rows, pitch_counts = [], {}
    if pitch:
        from iass.evaluation.pitch import pitch_rows as score_pitch

        pitch_rows, pitch_counts = score_pitch(track, pitch, methods, targets, _activity_label)
    return {"track_id": track_id, "rows": rows + activity_rows + pitch_rows, "frames": frames,
            "pitch_counts": pitch_counts, "scored_targets": track.scored}


def _activity_label(method_label: str) -> str:
    """The activity of a run does not depend on the weighting: one label per run."""
    return re.sub(r" \((weighted|unweighted)\)", "", method_label)


# --------------------------------------------------------------------------- workers
def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _score_task(args) -> dict:
    return score_track(*args)


def _prepare(corpus, run_sources: list, config: EvaluateConfig, progress: bool):
    """The runs (thresholds tuned when asked), the configuration with the IBM's STFT filled in,
    the methods and the targets of an evaluation."""
    runs = describe_runs(run_sources, config.device, config.checkpoint)
    if runs and (config.n_fft is None or config.hop is None):
        # the ideal binary mask on the models' own STFT (the first run's)
        first = _load(runs[0].source, config.device, config.checkpoint)
        config = replace(config, n_fft=config.n_fft or int(first.n_fft), hop=config.hop or int(first.hop))
    config = replace(config, n_fft=config.n_fft or 4096, hop=config.hop or corpus.hop)
    if config.threshold_split:
        runs = calibrate_runs(corpus, runs, config, progress)
    methods = plan_methods(runs, config.separation.weighting, config.oracle_gate)
    targets = list(config.targets or dict.fromkeys(t for r in runs for t in r.targets)
                   or corpus.taxonomy.targets)
    unknown = [t for t in targets if t not in corpus.taxonomy]
    if unknown:
        raise ConfigError(f"unknown targets {unknown} (taxonomy of {corpus.root})")
    return runs, config, methods, targets


def _score_all(tasks: list[tuple], workers: int, progress: bool) -> list[dict]:
    """:func:`score_track` of every task, in ``workers`` processes, sorted by track id."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing as mp

    from tqdm import tqdm

    from iass.log import progress_enabled

    results = []
    workers = max(1, min(int(workers or 1), len(tasks)))
    bar = tqdm(total=len(tasks), desc="evaluate", unit="track",
               disable=not (progress and progress_enabled()), file=sys.stderr)
    if workers == 1:
        for task in tasks:
            results.append(_score_task(task))
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = [pool.submit(_score_task, task) for task in tasks]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update()
    bar.close()
    return sorted(results, key=lambda r: r["track_id"])


def evaluate(corpus_root: str | Path, run_sources: list, out_dir: str | Path,
             config: EvaluateConfig = EvaluateConfig(), progress: bool = True) -> dict:
    """Evaluate ``run_sources`` (run directories or separator objects) on a corpus split and
    write the report into ``out_dir``. Returns the summary dict (also in metrics.json)."""
    from iass.evaluation import report
    from iass.pipelines.corpus_format import Corpus

    corpus_root = str(Path(corpus_root))
    corpus = Corpus(corpus_root)
    track_ids = corpus.track_ids(split=config.split)
    if config.limit:
        track_ids = track_ids[: config.limit]
    if not track_ids:
        raise CorpusError(f"{corpus_root}: no tracks in split {config.split!r}")
    runs, config, methods, targets = _prepare(corpus, run_sources, config, progress)
    if config.html:          # HTML report: workers capture the excerpts, rendered at the end
        from iass.evaluation import html_report

        config = replace(config, html_assets=str(html_report.reset_assets(out_dir)))
    tasks = [(corpus_root, tid, runs, methods, targets, config) for tid in track_ids]
    results = _score_all(tasks, config.workers, progress)
    summary = report.write_report(out_dir, results, methods, targets, corpus, config, runs)
    if config.html:
        html_report.render(out_dir)
    log.info("evaluated %d tracks x %d targets x %d methods -> %s",
             len(track_ids), len(targets), len(methods), out_dir)
    return summary


def calibrate_runs(corpus, runs: list[RunSpec], config: EvaluateConfig, progress: bool) -> list[RunSpec]:
    """Each run with activity gets per-target thresholds tuned on ``config.threshold_split``."""
    from iass.evaluation.calibrate import tune_thresholds

    if config.threshold_split == config.split:
        raise ConfigError(f"evaluate.threshold_split = {config.split!r} is the split being scored: "
                          "thresholds must be tuned on held-out tracks (e.g. valid)")
    out = []
    for spec in runs:
        if spec.has_activity:
            sep = _load(spec.source, config.device, config.checkpoint)
            tuned = tune_thresholds(corpus, sep, config.threshold_split, config.separation, progress,
                                    config.threshold_metric, config.win_seconds)
            spec = replace(spec, thresholds=tuple(tuned[t]["threshold"] for t in spec.targets))
            if progress:
                what = ("F1 {score:.2f}" if config.threshold_metric == "f1"
                        else "{gain_db:+.2f} dB over no weighting")
                log.info("  %s", ", ".join(f"{t} {v['threshold']:.2f} (" + what.format(**v) + ")"
                                                for t, v in tuned.items()))
        out.append(spec)
    return out


def config_from_params(params: dict, **overrides) -> EvaluateConfig:
    """EvaluateConfig from params.yaml's ``evaluate`` section plus CLI values. The IBM uses the
    first run's STFT, so that it masks the very frames the models mask."""
    from iass.evaluation.report import check_figure

    ev = dict(params.get("evaluate") or {})
    sep_keys = {"weighting", "threshold", "median_frames", "wiener", "chunk_seconds"}
    sep = SeparationConfig.from_params(ev, **{k: v for k, v in overrides.items() if k in sep_keys})
    cfg = EvaluateConfig(
        split=ev.get("split", "test"), separation=sep,
        win_seconds=float(ev.get("win_seconds", 1.0)), workers=int(ev.get("workers", 2)),
        threshold_split=ev.get("threshold_split") or None,
        threshold_metric=str(ev.get("threshold_metric", "sdr")),
        oracle_gate=bool(ev.get("oracle_gate", False)),
        html=bool(ev.get("html", True)),
        figure=check_figure(ev.get("figure")),  # fig3 | fig4, a ConfigError otherwise
    )
    rest = {k: v for k, v in overrides.items() if k not in sep_keys and v is not None}
    rest.update({"figure": check_figure(rest["figure"])} if "figure" in rest else {})
    return replace(cfg, **rest)
