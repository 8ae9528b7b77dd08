"""Frame-level activity labels: MedleyDB's activation confidence, shipped ``.lab`` files, exact notes.

Activation confidence (Bittner et al. 2014; marl/medleydb ``medleydb/annotate/activation_conf.py``),
computed here on the per-instrument summed stems of one track (``n`` = number of instruments)::

    x_i      = mono mixdown (mean of channels) of instrument i
    E_i[t]   = mean_k( sqrt(hwr(x_i[frame t])[k]) * w[k] )     w = hann(win + 2)[1:-1] (MATLAB hanning)
    E0[t]    = sum_i E_i[t]
    H_i[t]   = n * E_i[t] / max_t E0[t]         normalised across ALL instruments of the track
    H_i[t]   = 0 where E0[t] < energy_floor     (E0 un-normalised, as in the reference code)
    H_i      = filtfilt(butter(2, lowpass), H_i) along time
    C_i[t]   = 1 - 1 / (1 + exp(slope * (H_i[t] - center)))
    active   = C >= threshold

Frames. The reference pads ``win - hop`` zeros in front with ``hop = win / 2``, so its frame ``t``
covers samples ``[t*hop - win/2, t*hop + win/2)``: it is centred on sample ``t * hop``. We keep the
same window (4096 samples) and the same centring but step by the model's STFT hop: frame ``t``
covers ``[t*hop - win/2, t*hop + win/2)`` (zeros outside the track) and is centred on ``t*hop``,
the ``center=True`` convention of :mod:`corpus_format` (``n // hop + 1`` frames). With
``hop = 2048`` this reproduces the reference frame for frame (the reference may add one or two
trailing all-padding frames, which we do not). The low-pass cutoff is a fraction of the frame
rate, so at hop 1024 the same ``lowpass`` smooths over half the time span it does at 2048; it is
a parameter (``corpus.labels.lowpass``).

A shipped MedleyDB ``_ACTIVATION_CONF.lab`` (``time,S01,...``; hop 2048) is resampled to our frame
centres by linear interpolation in time (held at the ends); stems of one instrument combine by max.

Exact labels (synthesized tracks): frame ``t`` is active when a note interval overlaps the cell
``[t*hop - hop/2, t*hop + hop/2)`` around its centre, so a note shorter than a hop still marks the
frame it sounds in; confidence is 1.0 / 0.0.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from iass.pipelines.corpus_format import interval_frames, num_frames

DEFAULT_LABEL_PARAMS = {
    "win": 4096,
    "threshold": 0.5,
    "energy_floor": 0.01,
    "lowpass": 0.075,
    "logistic_slope": 20.0,
    "logistic_center": 0.15,
}


def label_params(cfg: Mapping | None) -> dict:
    """The label parameters that change labels (defaults filled in); part of the cache key."""
    out = dict(DEFAULT_LABEL_PARAMS)
    for key in DEFAULT_LABEL_PARAMS:
        if cfg and key in cfg:
            out[key] = type(DEFAULT_LABEL_PARAMS[key])(cfg[key])
    return out


def hanning(win: int) -> np.ndarray:
    """MATLAB's ``hanning(win)``: a Hann window without its zero end points."""
    import scipy.signal

    return scipy.signal.windows.hann(win + 2)[1:-1]


def to_mono(audio: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Mean of the channels in float64 (written out: ``mean(axis=1)`` is 6x slower on (n, 2)),
    into ``out`` (float64, length n) when given, so a caller mixing block by block allocates
    nothing."""
    audio = np.asarray(audio)
    if out is None:
        out = np.empty(audio.shape[0], dtype=np.float64)
    if audio.ndim == 1:
        out[:] = audio
        return out
    out[:] = audio[:, 0]
    for c in range(1, audio.shape[1]):
        out += audio[:, c]
    out /= audio.shape[1]
    return out


def frame_envelope(audio: np.ndarray, hop: int, win: int = 4096, window: np.ndarray | None = None,
                   n_frames: int | None = None) -> np.ndarray:
    """Envelope per frame: mean of sqrt(half-wave-rectified samples) x window; frame t centred on t*hop.

    ``audio``: mono (n,), or (n, channels), mixed down by :func:`to_mono` block by block.
    Computed a block of frames at a time from the signal itself, so memory stays at a few
    frames' worth (no whole-length copy in float64: the old code made four per stem, and on a VM
    fresh memory costs more than the sums); the values are those of the whole-signal form."""
    audio = np.asarray(audio)
    n = audio.shape[0]
    T = num_frames(n, hop) if n_frames is None else int(n_frames)
    w = hanning(win) if window is None else window
    half = win // 2
    end = max(0, min(n, T * hop + half))      # samples past this are never inside a frame
    out = np.empty(T, dtype=np.float64)
    block = 256
    from numpy.lib.stride_tricks import sliding_window_view

    buf = np.empty(min(T, block) * hop + win, dtype=np.float64)
    for start in range(0, T, block):
        stop = min(T, start + block)
        lo, hi = start * hop - half, (stop - 1) * hop + win - half   # signal range of the block
        seg = buf[: hi - lo]
        a, b = max(lo, 0), min(hi, end)
        seg[: max(0, a - lo)] = 0.0
        seg[max(0, b - lo):] = 0.0
        if b > a:
            x = seg[a - lo: b - lo]
            to_mono(audio[a:b], out=x)
            np.maximum(x, 0.0, out=x)
            np.sqrt(x, out=x)
        view = sliding_window_view(seg, win)[::hop]
        out[start:stop] = view[: stop - start] @ w / win
    return out


def activation_confidence(envelopes: np.ndarray, energy_floor: float = 0.01, lowpass: float = 0.075,
                          logistic_slope: float = 20.0, logistic_center: float = 0.15) -> np.ndarray:
    """(n_instruments, T) envelopes -> confidence in [0, 1], same shape (see module docstring)."""
    import scipy.signal

    H = np.asarray(envelopes, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] == 0:
        raise ValueError(f"envelopes must be (n_instruments, frames), got {H.shape}")
    E0 = H.sum(axis=0)
    peak = E0.max() if E0.size else 0.0
    if peak > 0:
        H = H.shape[0] * H / peak
    else:
        H = np.zeros_like(H)
    H[:, E0 < energy_floor] = 0.0
    b, a = scipy.signal.butter(2, lowpass, "low")
    T = H.shape[1]
    if T > 1:
        # filtfilt needs more samples than its pad length (3 * 3); shorten the pad on tiny tracks
        H = scipy.signal.filtfilt(b, a, H, axis=1, padlen=min(3 * max(len(a), len(b)), T - 1))
    return 1.0 - 1.0 / (1.0 + np.exp(logistic_slope * (H - logistic_center)))


def confidence_from_audio(instruments: Mapping[str, np.ndarray], hop: int, params: Mapping | None = None,
                          n_frames: int | None = None) -> dict[str, np.ndarray]:
    """Activation confidence per instrument from its (summed) audio, float32 (T,) each."""
    p = label_params(params)
    names = list(instruments)
    if not names:
        return {}
    n = max(np.asarray(instruments[k]).shape[0] for k in names)
    T = num_frames(n, hop) if n_frames is None else int(n_frames)
    w = hanning(p["win"])
    env = np.stack([frame_envelope(instruments[k], hop, p["win"], w, T) for k in names])
    conf = activation_confidence(env, p["energy_floor"], p["lowpass"], p["logistic_slope"],
                                 p["logistic_center"])
    return {k: conf[i].astype(np.float32) for i, k in enumerate(names)}


def binarize(confidence: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return np.asarray(confidence) >= threshold


# ------------------------------------------------------------------------- MedleyDB .lab files
def read_activation_lab(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A MedleyDB ``_ACTIVATION_CONF.lab``: (times in s, {stem id 'S01': confidence})."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read activation file ({exc.strerror})") from None
    if not rows or not rows[0] or rows[0][0].strip().lower() != "time":
        raise ValueError(f"{path}: expected a header 'time,S01,...'")
    header = [h.strip() for h in rows[0]]
    try:
        data = np.array([[float(v) for v in r] for r in rows[1:] if r], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric value ({exc})") from None
    if data.ndim != 2 or data.shape[1] != len(header):
        raise ValueError(f"{path}: rows do not match the {len(header)} header columns")
    return data[:, 0], {h: data[:, i] for i, h in enumerate(header) if i > 0}


def exact_lab_times(times: np.ndarray, sample_rate: int) -> np.ndarray:
    """The .lab's times are rounded to 0.1 ms; when they sit on a regular hop (2048 samples in
    MedleyDB), use the exact frame times t * hop / sr so resampling does not drift."""
    if len(times) < 2:
        return times
    hop = int(round(float(times[-1] - times[0]) / (len(times) - 1) * sample_rate))
    exact = times[0] + np.arange(len(times)) * hop / sample_rate
    return exact if hop > 0 and np.max(np.abs(exact - times)) < 1e-4 else times


def resample_confidence(times: np.ndarray, values: np.ndarray, n_frames: int, hop: int,
                        sample_rate: int) -> np.ndarray:
    """Linear interpolation of a confidence curve onto our frame centres t*hop/sr (ends held)."""
    centres = np.arange(n_frames, dtype=np.float64) * hop / sample_rate
    return np.interp(centres, times, values).astype(np.float32)


def confidence_from_lab(path: str | Path, stems_of: Mapping[str, Sequence[str]], n_frames: int,
                        hop: int, sample_rate: int) -> dict[str, np.ndarray]:
    """Per-instrument confidence from a shipped .lab: ``stems_of`` maps instrument -> stem ids.

    Stem ids may be 'S01' or '1'/'01'; an instrument is as active as its most active stem."""
    times, cols = read_activation_lab(path)
    times = exact_lab_times(times, sample_rate)
    norm = {_stem_key(k): v for k, v in cols.items()}
    out = {}
    for inst, stems in stems_of.items():
        curves = [norm[_stem_key(s)] for s in stems if _stem_key(s) in norm]
        if not curves:
            raise ValueError(f"{path}: no column for stems {list(stems)} of {inst}")
        out[inst] = resample_confidence(times, np.max(curves, axis=0), n_frames, hop, sample_rate)
    return out


def _stem_key(stem_id: str) -> str:
    s = str(stem_id).strip().upper()
    digits = s[1:] if s.startswith("S") else s
    return f"S{int(digits):02d}" if digits.isdigit() else s


# ---------------------------------------------------------------------------------- exact notes
def intervals_to_frames(intervals: Iterable[tuple[float, float]], n_frames: int, hop: int,
                        sample_rate: int) -> np.ndarray:
    """Boolean (T,): frame t active when an interval [on, off) s overlaps [t*hop - hop/2, t*hop + hop/2)
    (the frame rule of :func:`~iass.pipelines.corpus_format.interval_frames`, shared with the
    pitch rolls)."""
    active = np.zeros(n_frames, dtype=bool)
    intervals = list(intervals)
    if not intervals:
        return active
    on, off = np.asarray(intervals, dtype=np.float64).reshape(-1, 2).T
    first, last = interval_frames(on, off, hop, sample_rate)
    for lo, hi in zip(np.maximum(first, 0).tolist(), np.minimum(last, n_frames - 1).tolist()):
        if hi >= lo:
            active[lo: hi + 1] = True
    return active


def read_note_labels(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Exact activity intervals of a synthesized track, keyed by stem id (or instrument).

    Accepts Parquet or CSV with a key column (``stem``, ``stem_id``, ``instrument`` or ``track``)
    and ``onset_s``/``offset_s`` (or ``start``/``end``, ``onset``/``offset``), as the synthesizer's
    ``notes.parquet``; or JSON ``{key: [[on, off], ...]}`` (also ``{"stems": {key: ...}}``).
    CSV: a header containing containing ``start``/``end`` (or ``onset``/``offset``) and a key
    column (``stem``, ``stem_id``, ``instrument`` or ``track``), or JSON ``{key: [[on, off], ...]}``
    (also ``{"stems": {key: ...}}``)."""
    import json

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return _note_labels_parquet(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read note labels ({exc.strerror})") from None
    out: dict[str, list[tuple[float, float]]] = {}
    if path.suffix.lower() == ".json":
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("stems"), dict):
            doc = doc["stems"]
        for key, items in doc.items():
            for it in items:
                on, off = (it["start"], it["end"]) if isinstance(it, dict) else it[:2]
                out.setdefault(str(key), []).append((float(on), float(off)))
        return out
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        return out
    cols = {c.lower().strip(): c for c in rows[0]}
    key_col = next((cols[c] for c in ("stem_id", "stem", "instrument", "track") if c in cols), None)
    on_col = next((cols[c] for c in ("start", "onset", "start_s") if c in cols), None)
    off_col = next((cols[c] for c in ("end", "offset", "end_s") if c in cols), None)
    if not (key_col and on_col and off_col):
        raise ValueError(f"{path}: expected columns stem|instrument, start, end; got {list(rows[0])}")
    for r in rows:
        out.setdefault(r[key_col].strip(), []).append((float(r[on_col]), float(r[off_col])))
    return out


def _note_labels_parquet(path: Path) -> dict[str, list[tuple[float, float]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ValueError(f"{path}: unreadable note labels ({str(exc).splitlines()[0]})") from None
    cols = {c.lower(): c for c in table.column_names}
    key_col = next((cols[c] for c in ("stem_id", "stem", "instrument", "track") if c in cols), None)
    on_col = next((cols[c] for c in ("onset_s", "start", "onset", "start_s") if c in cols), None)
    off_col = next((cols[c] for c in ("offset_s", "end", "offset", "end_s") if c in cols), None)
    if not (key_col and on_col and off_col):
        raise ValueError(f"{path}: expected columns instrument, onset_s, offset_s; got {table.column_names}")
    out: dict[str, list[tuple[float, float]]] = {}
    keys = table.column(key_col).to_pylist()
    ons = table.column(on_col).to_pylist()
    offs = table.column(off_col).to_pylist()
    for k, on, off in zip(keys, ons, offs):
        out.setdefault(str(k), []).append((float(on), float(off)))
    return out
