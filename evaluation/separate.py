"""Full-track separation in chunks: masks on the mixture STFT, activity weighting, iSTFT.

A separator is anything with the protocol of ``iass.training.inference.Separator``::

    targets: list[str]; sample_rate: int; n_fft: int; hop: int; has_activity: bool; name: str
    masks(mixture_mag (2, F, T)) -> (mask (K, 2, F, T) >= 0, activity logits (K, T) or None)

The track is processed chunk by chunk along STFT frames, so memory is bounded by the chunk
whatever the track length, and the result equals separating the whole track at once
(``tests/_separate_reference.py``, written with ``torch.stft`` / ``torch.istft``; tests compare
them):
- each chunk's frames are exactly the frames of ``torch.stft(center=True)`` of the whole track
  (reflect padding at the track's ends only);
- the model sees ``context_frames`` extra frames on both sides, so a model whose receptive field
  in time is within the context, and the activity median filter, see what they would see on the
  whole track (Open-Unmix's BiLSTM sees the whole input: for it chunking is a close approximation);
- the iSTFT is a streaming overlap-add that carries the unfinished tail to the next chunk and
  divides by the same window envelope as ``torch.istft``;
- the Wiener post-filter runs on fixed blocks of frames aligned to the track start (as Open-Unmix
  does with ``wiener_win_len``), and chunks are whole numbers of blocks.

Activity weighting (Hung & Lerch 2020): ``hard`` = sigmoid -> >= threshold -> median filter of
``median_frames`` frames along time -> the mask multiplied per frame by the 0/1 decision;
``soft`` = the mask multiplied by the probability; ``none`` = the mask as is.

Multi-pitch: a separator with ``has_pitch`` (an IASS run trained with a pitch head) also gives
each frame's key probabilities from the same pass; they come out per chunk (``pitch``, (K, b - a,
88)), in :attr:`Separation.pitch`, and ``separate_file`` writes them as one MIDI file per target
(:mod:`iass.evaluation.pitch`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np

from iass.evaluation.stft import OverlapAdd, hann, stft_frames
from iass.pipelines.corpus_format import num_frames

WEIGHTINGS = ("none", "hard", "soft")
#: a variant, not a config weighting: the mask gated by the corpus' own activity labels (a
#: reference, like the ideal binary mask: the best any activity detector's hard gate can do)
ORACLE = "oracle"
#: Wiener filter block (frames), Open-Unmix's ``wiener_win_len``
WIENER_BLOCK = 300
#: extra frames the model sees on each side of a chunk when the separator does not say
DEFAULT_CONTEXT = 64


class SeparatorProtocol(Protocol):
    targets: list[str]
    sample_rate: int
    n_fft: int
    hop: int
    has_activity: bool
    name: str

    def masks(self, mixture_mag):  # pragma: no cover - protocol
        ...


@dataclass(frozen=True)
class SeparationConfig:
    weighting: str = "none"          # none | hard | soft
    threshold: float | tuple[float, ...] = 0.5   # one for all targets, or one per target
    median_frames: int = 21
    wiener: bool = False
    wiener_iterations: int = 1
    chunk_seconds: float | None = 30.0  # None: the whole track in one chunk
    context_frames: int | None = None   # None: the separator's ``context_frames`` or 64

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not {self.weighting!r}")
        if self.median_frames < 1 or self.median_frames % 2 == 0:
            raise ValueError(f"median_frames must be a positive odd number, not {self.median_frames}")
        values = np.atleast_1d(np.asarray(self.threshold, dtype=np.float64))
        if values.ndim != 1 or values.size == 0 or not ((values >= 0) & (values <= 1)).all():
            raise ValueError(f"threshold must be in [0, 1] (one, or one per target), not {self.threshold}")

    def thresholds(self, n_targets: int) -> np.ndarray:
        """(n_targets, 1): the threshold of each target's activity probability."""
        values = np.atleast_1d(np.asarray(self.threshold, dtype=np.float64))
        if values.size == 1:
            return np.full((n_targets, 1), values[0])
        if values.size != n_targets:
            raise ValueError(f"{values.size} per-target thresholds for {n_targets} targets")
        return values[:, None]

    @classmethod
    def from_params(cls, evaluate: dict, **overrides) -> "SeparationConfig":
        keys = {"weighting", "threshold", "median_frames", "wiener", "chunk_seconds"}
        values = {k: evaluate[k] for k in keys if k in evaluate}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class Separation:
    """One separated track: estimates (K, n, 2) float32 and per-frame activity (K, T) or None."""

    targets: list[str]
    sample_rate: int
    hop: int
    estimates: np.ndarray
    probability: np.ndarray | None = None
    decision: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    pitch: np.ndarray | None = None        # (K, T, 88) key probabilities (a pitch head), or None


# ------------------------------------------------------------------------- activity weighting
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def median_filter_binary(decision: np.ndarray, size: int, pad_left: bool = True,
                         pad_right: bool = True) -> np.ndarray:
    """Median filter of odd ``size`` along the last axis of a 0/1 array: 1 where more than half
    of the ``size`` frames around are 1. Beyond a track end the frames count as 0 (zero padding,
    as ``scipy.signal.medfilt``); ``pad_left/right=False`` means the input already carries
    enough real context on that side and only the valid centre is returned (for chunks)."""
    r = size // 2
    d = np.asarray(decision, dtype=np.int64)
    if r == 0:
        return d.astype(bool)
    pad = [(0, 0)] * (d.ndim - 1) + [(r if pad_left else 0, r if pad_right else 0)]
    d = np.pad(d, pad)
    c = np.concatenate([np.zeros(d.shape[:-1] + (1,), dtype=np.int64), np.cumsum(d, axis=-1)], -1)
    counts = c[..., size:] - c[..., :-size]
    return counts >= r + 1


def activity_weights(logits: np.ndarray, config: SeparationConfig, lo: int, hi: int, a: int, b: int,
                     n_frames: int):
    """Probability, decision and the per-frame weight for frames [a, b) from logits of the
    frames [lo, hi) that the model saw (lo <= a - r or lo == 0; hi >= b + r or hi == n_frames)."""
    prob = sigmoid(logits)                                        # (K, hi - lo)
    r = config.median_frames // 2
    s0, s1 = max(a - r, lo), min(b + r, hi)
    if (s0 > 0 and s0 != a - r) or (s1 < n_frames and s1 != b + r):
        raise ValueError("not enough context frames for the activity median filter")
    raw = prob[:, s0 - lo: s1 - lo] >= config.thresholds(prob.shape[0])
    # zero padding only where the track ends (real frames elsewhere)
    left = r - (a - s0)
    right = r - (s1 - b)
    padded = np.pad(raw, [(0, 0), (left, right)])
    decision = median_filter_binary(padded, config.median_frames, False, False)
    p = prob[:, a - lo: b - lo]
    if config.weighting == "hard":
        weight = decision.astype(np.float32)
    elif config.weighting == "soft":
        weight = p.astype(np.float32)
    else:
        weight = None
    return p.astype(np.float32), decision, weight


# ------------------------------------------------------------------------------- Wiener
def wiener_filter(est_mag: np.ndarray, mix_spec: np.ndarray, iterations: int = 1,
                  block: int = WIENER_BLOCK, first_frame: int = 0) -> np.ndarray:
    """Multichannel Wiener post-filter (norbert) on blocks of ``block`` frames aligned to frame 0.

    est_mag: (K, C, F, t) magnitudes of the targets; mix_spec: complex (C, F, t) for frames
    ``first_frame ..``. A residual source (the mixture magnitude not claimed by any target)
    takes what the targets do not explain. Returns complex (K, C, F, t)."""
    import norbert

    if first_frame % block:
        raise ValueError(f"Wiener blocks must start at a multiple of {block} frames")
    K, C, Fb, t = est_mag.shape
    out = np.empty((K, C, Fb, t), dtype=np.complex64)
    mix_mag = np.abs(mix_spec)
    for s in range(0, t, block):
        e = min(s + block, t)
        v = np.moveaxis(est_mag[..., s:e], (0, 1, 2, 3), (3, 2, 1, 0)).astype(np.float64)
        resid = np.maximum(mix_mag[..., s:e] - est_mag[..., s:e].sum(0), 0.0)
        v = np.concatenate([v, np.moveaxis(resid, (0, 1, 2), (2, 1, 0))[..., None]], axis=3)
        x = np.moveaxis(mix_spec[..., s:e], (0, 1, 2), (2, 1, 0)).astype(np.complex128)
        y = norbert.wiener(v, x.copy(), iterations=iterations, use_softmask=True)
        out[..., s:e] = np.moveaxis(y[..., :K], (3, 2, 1, 0), (0, 1, 2, 3))
    return out


# -------------------------------------------------------------------------- the separator
def _context(separator, config: SeparationConfig) -> int:
    c = config.context_frames
    if c is None:
        c = int(getattr(separator, "context_frames", DEFAULT_CONTEXT) or DEFAULT_CONTEXT)
    # the median filter needs decisions r frames beyond the chunk, each with the model's context
    return int(c) + config.median_frames // 2


def _chunk_frames(separator, config: SeparationConfig, n_frames: int) -> int:
    if config.chunk_seconds is None:
        return n_frames
    frames = max(int(round(config.chunk_seconds * separator.sample_rate / separator.hop)), 1)
    if config.wiener:
        frames = max(WIENER_BLOCK, frames // WIENER_BLOCK * WIENER_BLOCK)
    return frames


def _masks(separator, mag):
    mask, logits, _ = _outputs(separator, mag)
    return mask, logits


def _outputs(separator, mag):
    """mask (torch, CPU), activity logits and pitch probabilities (K, T, 88) (numpy, or None)."""
    import torch

    device = getattr(separator, "device", None) or "cpu"
    pitch = None
    with torch.inference_mode():
        if getattr(separator, "has_pitch", False):
            mask, logits, pitch = separator.outputs(mag.to(device))
        else:
            mask, logits = separator.masks(mag.to(device))
    mask = mask.detach().to("cpu", torch.float32)
    logits = None if logits is None else logits.detach().to("cpu", torch.float32).numpy()
    if pitch is not None:
        pitch = sigmoid(pitch.detach().to("cpu", torch.float32).numpy()).astype(np.float32)
    return mask, logits, pitch


def _oracle_gates(weightings: tuple[str, ...], oracle: np.ndarray | None) -> np.ndarray | None:
    """Checks the weightings; the oracle labels as 0/1 float gates (NaN: unknown, left open)."""
    for w in weightings:
        if w not in WEIGHTINGS and not (w == ORACLE and oracle is not None):
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not {w!r}"
                             + (" (oracle needs the reference gates)" if w == ORACLE else ""))
    if oracle is None:
        return None
    oracle = np.where(np.isnan(oracle), 1.0, np.asarray(oracle, dtype=np.float64) > 0.5)
    return oracle.astype(np.float32)


def _chunk_masks(read, n_samples: int, separator, window, lo: int, hi: int, a: int, b: int):
    """The mask (K, C, F, b - a) and mixture STFT (C, F, b - a) of frames [a, b), the
    activity logits of the frames [lo, hi) the model saw (or None) and the pitch probabilities
    (K, b - a, 88) of frames [a, b) (or None)."""
    n_fft, hop = int(separator.n_fft), int(separator.hop)
    spec = stft_frames(read, n_samples, n_fft, hop, lo, hi, window)     # (C, F, hi - lo)
    mask, logits, pitch = _outputs(separator, spec.abs())
    if mask.ndim != 4 or tuple(mask.shape[1:]) != tuple(spec.shape):
        raise ValueError(f"separator {separator.name!r}: mask shape {tuple(mask.shape)}, "
                         f"expected (targets, {', '.join(map(str, spec.shape))})")
    if pitch is not None:
        pitch = pitch[:, a - lo: b - lo]
    return mask[..., a - lo: b - lo], spec[..., a - lo: b - lo], logits, pitch


def _weighted_estimate(mask, mix, weighting: str, prob, decision, oracle, a: int, b: int,
                       config: SeparationConfig):
    """The complex estimate (K, C, F, b - a) of one weighting: the mask gated (hard), scaled
    (soft) or gated by the labels (oracle), on the mixture STFT or through the Wiener filter."""
    import torch

    weighted = mask
    if prob is not None and weighting == "hard":
        weighted = mask * torch.from_numpy(decision.astype(np.float32))[:, None, None, :]
    elif prob is not None and weighting == "soft":
        weighted = mask * torch.from_numpy(prob)[:, None, None, :]
    elif weighting == ORACLE:
        gate = np.ones((mask.shape[0], b - a), dtype=np.float32)
        labelled = oracle[:, a:b]
        gate[:, : labelled.shape[1]] = labelled    # frames past the labels stay open
        weighted = mask * torch.from_numpy(gate)[:, None, None, :]
    if config.wiener:
        return torch.from_numpy(wiener_filter((weighted * mix.abs()).numpy(), mix.numpy(),
                                              config.wiener_iterations, first_frame=a))
    return weighted * mix                                                  # mixture phase


def separate_stream(read: Callable[[int, int], np.ndarray], n_samples: int, separator,
                    config: SeparationConfig = SeparationConfig(),
                    weightings: tuple[str, ...] | None = None, spectra: bool = False,
                    oracle: np.ndarray | None = None) -> Iterator[dict]:
    """Separate a track chunk by chunk. ``read(start, count)`` returns (count, 2) float32 of the
    mixture. ``weightings`` (default: ``(config.weighting,)``) are produced from ONE pass of the
    model (evaluation scores IASS with and without weighting).

    Yields dicts in order: ``start`` (sample), ``audio`` {weighting: (K, m, 2) float32} for the
    samples [start, start + m), ``frames`` (a, b), ``probability`` / ``decision`` (K, b - a) or
    None. ``oracle`` (K, T) 0/1 gates (the reference labels; NaN = unknown, left open) makes the
    weighting ``"oracle"`` available: the mask gated by them. ``spectra=True``: instead of audio,
    ``spectrum`` (K, C, F, b - a), the unweighted
    estimate ``mask * mixture STFT`` of the frames (no synthesis; the gate tuner's input).
    Memory: one chunk of frames plus context, whatever ``n_samples``."""
    weightings = tuple(weightings or (config.weighting,))
    oracle = _oracle_gates(weightings, oracle)
    n_fft, hop = int(separator.n_fft), int(separator.hop)
    T = num_frames(n_samples, hop)
    ctx = _context(separator, config)
    chunk = _chunk_frames(separator, config, T)
    window = hann(n_fft)
    olas = {w: OverlapAdd(n_samples, n_fft, hop, window) for w in weightings}
    for a in range(0, T, chunk):
        b = min(a + chunk, T)
        lo, hi = max(0, a - ctx), min(T, b + ctx)
        mask, mix, logits, pitch = _chunk_masks(read, n_samples, separator, window, lo, hi, a, b)
        prob = decision = None
        if separator.has_activity and logits is not None:
            prob, decision, _ = activity_weights(logits, config, lo, hi, a, b, T)
        if spectra:
            yield {"frames": (a, b), "spectrum": mask * mix, "probability": prob, "decision": decision,
                   "pitch": pitch}
            continue
        audio = {w: olas[w].push(_weighted_estimate(mask, mix, w, prob, decision, oracle, a, b, config))
                 for w in weightings}
        m = next(iter(audio.values())).shape[1]
        yield {"start": olas[weightings[0]].emitted - m, "audio": audio, "frames": (a, b),
               "probability": prob, "decision": decision, "pitch": pitch}


def separate(mixture: np.ndarray, separator, config: SeparationConfig = SeparationConfig()) -> Separation:
    """Separate an in-memory mixture (n, 2) chunk by chunk; see :func:`separate_stream`."""
    return separate_variants(mixture, separator, config, (config.weighting,))[config.weighting]


def separate_variants(mixture: np.ndarray, separator, config: SeparationConfig,
                      weightings: tuple[str, ...], oracle: np.ndarray | None = None) -> dict[str, Separation]:
    """Several weightings of one mixture from one pass of the model: {weighting: Separation}."""
    mixture = np.asarray(mixture, dtype=np.float32)
    n = len(mixture)
    K = len(separator.targets)
    T = num_frames(n, separator.hop)
    estimates = {w: np.zeros((K, n, 2), dtype=np.float32) for w in weightings}
    prob = dec = pitch = None
    for part in separate_stream(lambda s, c: mixture[s: s + c], n, separator, config, weightings,
                                oracle=oracle):
        s = part["start"]
        for w, audio in part["audio"].items():
            estimates[w][:, s: s + audio.shape[1]] = audio
        pitch = _collect_pitch(pitch, part, K, T)
        if part["probability"] is not None:
            if prob is None:
                prob = np.zeros((K, T), dtype=np.float32)
                dec = np.zeros((K, T), dtype=bool)
            a, b = part["frames"]
            prob[:, a:b] = part["probability"]
            dec[:, a:b] = part["decision"]
    return {w: Separation(list(separator.targets), int(separator.sample_rate), int(separator.hop),
                          estimates[w], prob, dec, pitch=pitch) for w in weightings}


def _collect_pitch(pitch: np.ndarray | None, part: dict, K: int, T: int) -> np.ndarray | None:
    """A chunk's pitch probabilities written into the track's (K, T, 88) array (made at the
    first chunk that has them)."""
    if part.get("pitch") is None:
        return pitch
    if pitch is None:
        pitch = np.zeros((K, T, part["pitch"].shape[-1]), dtype=np.float32)
    a, b = part["frames"]
    pitch[:, a:b] = part["pitch"]
    return pitch


# -------------------------------------------------------------------------- user files
def separate_file(audio_path, separator, out_dir, config: SeparationConfig = SeparationConfig()) -> dict:
    """Separate a user's audio file (any format ffmpeg decodes: WAV, FLAC, MP3, M4A/AAC, OGG,
    MP4; of a MUSDB ``.stem.mp4`` its mixture, stream 0) with bounded memory:
    ``out_dir/<target>.wav`` (float, the model's rate) for every target, and, for a model with
    activity, ``activity.csv`` + ``activity.parquet`` (one row per frame: time, probability and
    the applied decision per target). Returns a summary dict. An unreadable input is an
    :class:`iass.errors.AudioError` naming the file."""
    from pathlib import Path

    from iass.evaluation.audio_input import AudioInputError, open_mixture

    out_dir = Path(out_dir)
    sr = int(separator.sample_rate)
    with open_mixture(audio_path, sr) as mix:
        if mix.n_samples <= separator.n_fft // 2:
            raise AudioInputError(audio_path, f"{mix.n_samples} samples at {sr} Hz: too short for "
                                              f"the model's STFT (n_fft {separator.n_fft})")
        out_dir.mkdir(parents=True, exist_ok=True)
        prob, dec, pitch = _write_targets(mix, separator, out_dir, config)
        n_samples, notes = mix.n_samples, list(mix.notes)
    files = [str(out_dir / f"{t}.wav") for t in separator.targets]
    if prob is not None:
        files += _write_activity(out_dir, separator.targets, prob, dec, int(separator.hop), sr)
    if pitch is not None:   # a pitch head: the predicted piano roll of each target as MIDI
        from iass.evaluation.pitch import write_pitch_midi

        files += write_pitch_midi(out_dir, separator.targets, pitch, int(separator.hop), sr)
    return {"input": str(audio_path), "samples": n_samples, "seconds": n_samples / sr,
            "sample_rate": sr, "targets": list(separator.targets), "files": files, "notes": notes,
            "weighting": config.weighting if prob is not None else "none"}


def _write_targets(mix, separator, out_dir, config: SeparationConfig):
    """Stream the separation of ``mix`` (a MixtureSource) into ``out_dir/<target>.wav``; returns
    the activity probability and decision (K, T), or (None, None) without activity, and the
    pitch probabilities (K, T, 88) or None."""
    import contextlib

    import soundfile as sf

    from iass.io import atomic_path

    sr, K = int(separator.sample_rate), len(separator.targets)
    T = num_frames(mix.n_samples, separator.hop)
    prob = dec = pitch = None
    with contextlib.ExitStack() as stack:
        writers = {}
        for target in separator.targets:
            tmp = stack.enter_context(atomic_path(out_dir / f"{target}.wav"))
            writers[target] = stack.enter_context(
                sf.SoundFile(str(tmp), "w", samplerate=sr, channels=2, subtype="FLOAT", format="WAV"))
        for part in separate_stream(mix.read, mix.n_samples, separator, config):
            audio = part["audio"][config.weighting]
            for k, target in enumerate(separator.targets):
                writers[target].write(audio[k])
            if part["probability"] is not None:
                if prob is None:
                    prob, dec = np.zeros((K, T), dtype=np.float32), np.zeros((K, T), dtype=bool)
                a, b = part["frames"]
                prob[:, a:b], dec[:, a:b] = part["probability"], part["decision"]
            pitch = _collect_pitch(pitch, part, K, T)
        for w in writers.values():
            w.close()                     # flush before atomic_path renames the file
    return prob, dec, pitch


def _write_activity(out_dir, targets, prob: np.ndarray, dec: np.ndarray, hop: int, sr: int) -> list[str]:
    """activity.parquet and activity.csv: per frame, the time, and per target the probability
    and the applied decision (0/1 in the CSV)."""
    import polars as pl

    from iass.io import atomic_write_parquet, atomic_write_text

    T = prob.shape[1]
    cols = {"frame": np.arange(T, dtype=np.int32), "time_s": (np.arange(T) * hop / sr).astype(np.float64)}
    for k, target in enumerate(targets):
        cols[f"{target}_probability"] = prob[k]
        cols[f"{target}_active"] = dec[k]
    table = pl.DataFrame(cols)
    atomic_write_parquet(out_dir / "activity.parquet", table)
    csv = table.with_columns([pl.col(c).cast(pl.Int8) for c in table.columns if c.endswith("_active")])
    atomic_write_text(out_dir / "activity.csv", csv.write_csv(float_precision=4))
    return [str(out_dir / "activity.csv"), str(out_dir / "activity.parquet")]
