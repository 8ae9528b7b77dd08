"""Multi-pitch scores of a run with a pitch head, and its predicted piano rolls as MIDI.

The pitch head (``model.iass.pitch_weight`` > 0) gives each target's probability of each of the
88 piano keys (MIDI 21..108) per STFT frame; a key is on where it is >= :data:`THRESHOLD`. The
reference is the corpus' piano roll (``Corpus.read_pitch``: the same frames, a note marks every
frame whose cell it overlaps), known only on synthesized tracks and MedleyDB's pitch annotations:
a target whose pitch is unknown is not scored.

Scores are ``mir_eval.multipitch``'s (Bay et al. 2009): the rolls become frame times (frame
``t`` at ``t * hop / sample_rate`` s, the corpus' frame centres) and per frame the keys'
frequencies (``mir_eval.util.midi_to_hz``); ``mir_eval`` matches them within half a semitone
and gives precision TP / estimated, recall TP / reference, accuracy TP / (TP + FP + FN); the
F-measure is ``mir_eval.util.f_measure(precision, recall)``. Per track (``results.parquet``,
metrics ``pitch_precision`` ... ``pitch_f``, on the tracks where the target plays) and pooled
over all frames of the split (summary.md, metrics.json ``pitch``: the counts summed over the
tracks, then the same formulas; silent tracks count their false alarms there).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iass.pipelines.corpus_format import PITCH_MIN as PITCH_LOW   # MIDI note of key 0 (the corpus' rolls)
THRESHOLD = 0.5            # key probability -> on
METRICS = ("precision", "recall", "accuracy", "f")
ROW_METRICS = tuple(f"pitch_{m}" for m in METRICS)


def roll_times(n_frames: int, hop: int, sample_rate: int) -> np.ndarray:
    """Frame ``t``'s time (s): its centre, ``t * hop / sample_rate``."""
    return np.arange(int(n_frames), dtype=np.float64) * hop / sample_rate


def roll_to_freqs(roll: np.ndarray) -> list[np.ndarray]:
    """(T, 88) bool -> per frame the frequencies (Hz) of its keys (mir_eval's multipitch format)."""
    import mir_eval

    roll = np.asarray(roll, dtype=bool)
    return [mir_eval.util.midi_to_hz(PITCH_LOW + np.flatnonzero(row).astype(np.float64)) for row in roll]


def pitch_counts(ref_roll: np.ndarray, est_roll: np.ndarray, hop: int, sample_rate: int) -> dict:
    """mir_eval.multipitch's counts of two rolls on the same frames: ``tp``, ``n_ref``, ``n_est``
    (summed over the frames; sums pool over tracks)."""
    import mir_eval.multipitch as mp

    n = min(len(ref_roll), len(est_roll))
    times = roll_times(n, hop, sample_rate)
    ref, est = roll_to_freqs(ref_roll[:n]), roll_to_freqs(est_roll[:n])
    mp.validate(times, ref, times, est)
    ref_m, est_m = mp.frequencies_to_midi(ref), mp.frequencies_to_midi(est)
    tp = mp.compute_num_true_positives(ref_m, est_m)
    return {"tp": float(tp.sum()), "n_ref": float(mp.compute_num_freqs(ref_m).sum()),
            "n_est": float(mp.compute_num_freqs(est_m).sum())}


def scores_of(counts: dict) -> dict[str, float]:
    """precision, recall, accuracy (``mir_eval.multipitch.compute_accuracy``, 0 where a sum is
    0, as mir_eval) and F-measure of (pooled) counts."""
    import warnings

    import mir_eval
    import mir_eval.multipitch as mp

    tp, n_ref, n_est = (np.array([counts[k]]) for k in ("tp", "n_ref", "n_est"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # "all empty": a silent target, 0 as mir_eval says
        p, r, a = mp.compute_accuracy(tp, n_ref, n_est)
    return {"precision": float(p), "recall": float(r), "accuracy": float(a),
            "f": float(mir_eval.util.f_measure(p, r))}


def pitch_scores(ref_roll: np.ndarray, est_roll: np.ndarray, hop: int, sample_rate: int) -> dict:
    """Precision, recall, accuracy and F-measure of an estimated roll (T, 88) against the
    reference, with the counts (``tp``, ``n_ref``, ``n_est``)."""
    counts = pitch_counts(ref_roll, est_roll, hop, sample_rate)
    return {**scores_of(counts), **counts}


# ---------------------------------------------------------------------- evaluation rows
def track_pitch(corpus, track_id: str, targets) -> dict[str, np.ndarray]:
    """{target: reference roll} for the targets whose pitch the corpus knows in this track."""
    read = getattr(corpus, "read_pitch", None)
    out = {}
    for t in targets if read is not None else ():
        roll = read(track_id, t)
        if roll is not None:
            out[t] = roll
    return out


def pitch_rows(track, pitch: dict, methods: list, targets: list[str], run_label) -> tuple[list, dict]:
    """Per-track rows (metrics :data:`ROW_METRICS`, the tracks where the target plays) of every
    run with a pitch head, and the counts to pool ({(run, target): counts}).

    ``track``: has ``base``, ``hop``, ``sr``, ``pitch_of`` ({target: reference roll});
    ``pitch``: {run: {target: (probabilities (T, 88), hop)}}."""
    rows, counts = [], {}
    for run_name, per_target in pitch.items():
        label = run_label(next(m.label for m in methods if m.run == run_name and m.run_index is not None))
        for t, (prob, hop) in per_target.items():
            ref = track.pitch_of.get(t)
            if t not in targets or ref is None:
                continue
            if hop != track.hop:
                raise ValueError(f"{run_name}: model hop {hop} != corpus label hop {track.hop}; "
                                 "pitch cannot be scored frame by frame")
            s = pitch_scores(ref, prob >= THRESHOLD, hop, track.sr)
            counts[(run_name, t)] = {k: s[k] for k in ("tp", "n_ref", "n_est")}
            if s["n_ref"] > 0:
                rows += [{**track.base, "target": t, "method": label, "run": run_name,
                          "metric": f"pitch_{m}", "value": float(s[m])} for m in METRICS]
    return rows, counts


# ----------------------------------------------------------------------------- report
def pooled_pitch(results: list[dict]) -> list[dict]:
    """Scores from the counts summed over every track, per (run, target)."""
    groups: dict[tuple[str, str], dict] = {}
    for res in results:
        for key, c in (res.get("pitch_counts") or {}).items():
            g = groups.setdefault(key, {"tp": 0.0, "n_ref": 0.0, "n_est": 0.0, "tracks": 0})
            for k in ("tp", "n_ref", "n_est"):
                g[k] += c[k]
            g["tracks"] += 1
    return [{"run": run, "target": target, **scores_of(g), **g}
            for (run, target), g in sorted(groups.items())]


def pitch_section(pooled: list[dict], targets: list[str], fmt) -> list[str]:
    """summary.md's multi-pitch table (empty when no run has a pitch head)."""
    if not pooled:
        return []
    lines = ["## Multi-pitch (mir_eval.multipitch, frames pooled over the tracks with known pitch)", "",
             f"Keys on where the pitch head's probability >= {THRESHOLD}; a reference key is matched "
             "within half a semitone. `notes` = reference (frame, key) entries; `tracks` = tracks "
             "whose pitch of the target is known.", "",
             "| target | run | precision | recall | accuracy | F | notes | tracks |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    order = {t: i for i, t in enumerate(targets)}
    for p in sorted(pooled, key=lambda p: (order.get(p["target"], 99), p["run"])):
        lines.append(f"| {p['target']} | {p['run']} | {fmt(p['precision'])} | {fmt(p['recall'])} | "
                     f"{fmt(p['accuracy'])} | {fmt(p['f'])} | {int(p['n_ref'])} | {p['tracks']} |")
    return lines + [""]


def pitch_metrics(pooled: list[dict], slug) -> dict:
    """metrics.json ``pitch``: {target: {run key: {precision, recall, accuracy, f}}}."""
    out: dict = {}
    for p in pooled:
        out.setdefault(p["target"], {})[slug(p["run"])] = {m: p[m] for m in METRICS}
    return out


# ------------------------------------------------------------------------------- MIDI
def roll_to_notes(roll: np.ndarray) -> list[tuple[int, int, int]]:
    """(T, 88) bool -> notes (first frame, end frame (exclusive), MIDI pitch): each run of
    consecutive frames of a key, in order of start then pitch."""
    roll = np.asarray(roll, dtype=bool)
    padded = np.pad(roll, [(1, 1), (0, 0)]).astype(np.int8)
    edges = np.diff(padded, axis=0)                     # +1: a run starts, -1: it ended
    notes = []
    for k in range(roll.shape[1]):
        starts, ends = np.flatnonzero(edges[:, k] == 1), np.flatnonzero(edges[:, k] == -1)
        notes += [(int(a), int(b), PITCH_LOW + k) for a, b in zip(starts, ends)]
    return sorted(notes)


def write_pitch_midi(out_dir, targets, probability: np.ndarray, hop: int, sample_rate: int,
                     threshold: float = THRESHOLD) -> list[str]:
    """``out_dir/<target>.mid`` for each target: the keys on (probability >= ``threshold``) as
    notes; a note spanning frames [a, b) lasts from inside frame a's cell to inside frame
    b - 1's, ``[(a - 1/4) hop, (b - 3/4) hop)`` (clipped at 0): a quarter hop inside the cells'
    edges, so that MIDI's tick rounding keeps it there and reading it back onto the frames
    (``corpus_format.notes_to_roll``) gives the same roll. Velocity 100, one piano track per file."""
    import pretty_midi

    from iass.io import atomic_path

    out_dir = Path(out_dir)
    files = []
    for k, target in enumerate(targets):
        midi = pretty_midi.PrettyMIDI(resolution=960)   # ~0.5 ms ticks at 120 bpm
        inst = pretty_midi.Instrument(program=0, name=str(target))
        for a, b, p in roll_to_notes(probability[k] >= threshold):
            start = max((a - 0.25) * hop / sample_rate, 0.0)
            inst.notes.append(pretty_midi.Note(velocity=100, pitch=p, start=start,
                                               end=(b - 0.75) * hop / sample_rate))
        midi.instruments.append(inst)
        path = out_dir / f"{target}.mid"
        with atomic_path(path) as tmp:
            midi.write(str(tmp))
        files.append(str(path))
    return files
