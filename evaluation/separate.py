"""Full-track separation in chunks: masks on the mixture STFT, activity weighting, iSTFT.

A separator is anything with the protocol of ``iass.training.inference.Separator``::

    targets: list[str]; sample_rate: int; n_fft: int; hop: int; has_activity: bool; name: str
    masks(mixture_mag (2, F, T)) -> (mask (K, 2, F, T) >= 0, activity logits (K, T) or None)

The track is processed chunk by chunk along STFT frames, so memory is bounded by the chunk
whatever the track length, and the result equals separating the whole track at once
(:func:`separate_oneshot`, written with ``torch.stft`` / ``torch.istft``; tests compare them):
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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np

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


# ------------------------------------------------------------------------------ STFT pieces
def hann(n_fft: int):
    import torch

    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def num_frames(n_samples: int, hop: int) -> int:
    return int(n_samples) // int(hop) + 1


def stft_frames(read: Callable[[int, int], np.ndarray], n_samples: int, n_fft: int, hop: int,
                lo: int, hi: int, window=None):
    """Frames ``lo..hi-1`` of ``torch.stft(x.T, n_fft, hop, window=hann, center=True)`` of the
    whole signal, reading only the samples they cover. ``read(start, count)`` -> (count, C).
    Returns complex64 (C, n_fft // 2 + 1, hi - lo)."""
    import torch

    half = n_fft // 2
    if n_samples <= half:
        raise ValueError(f"signal of {n_samples} samples is too short for n_fft {n_fft} "
                         f"(reflect padding needs more than {half})")
    window = hann(n_fft) if window is None else window
    # sample index (original coordinates) of every position of the frames; reflect at the ends
    idx = np.arange(lo * hop - half, (hi - 1) * hop + half)
    idx = np.where(idx < 0, -idx, idx)
    idx = np.where(idx >= n_samples, 2 * (n_samples - 1) - idx, idx)
    s0, s1 = int(idx.min()), int(idx.max()) + 1
    seg = np.asarray(read(s0, s1 - s0), dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(seg[idx - s0].T))            # (C, L)
    frames = x.unfold(1, n_fft, hop)                                        # (C, hi - lo, n_fft)
    return torch.fft.rfft(frames * window, dim=2).transpose(1, 2)          # (C, F, t)


class OverlapAdd:
    """Streaming inverse STFT (``torch.istft(center=True, length=n)``) over consecutive frame
    chunks: frames are pushed in order, finished samples come out, the tail waits."""

    def __init__(self, n_samples: int, n_fft: int, hop: int, window=None):
        self.n, self.n_fft, self.hop = int(n_samples), int(n_fft), int(hop)
        self.window = hann(n_fft) if window is None else window
        self.n_frames = num_frames(n_samples, hop)
        self.next_frame = 0
        self.emitted = 0                    # samples [0, emitted) are out
        self.buf = None                     # (K, C, m) pending sums from sample `emitted`
        self.env = None                     # (m,) pending window-square sums

    def push(self, spec) -> np.ndarray:
        """spec: complex (K, C, F, t) for frames ``next_frame .. next_frame + t - 1``.
        Returns the finished samples (K, m, C) float32 (m may be 0)."""
        import torch
        import torch.nn.functional as F

        K, C, _, t = spec.shape
        a, b = self.next_frame, self.next_frame + t
        if b > self.n_frames:
            raise ValueError(f"pushed frames up to {b} but the track has {self.n_frames}")
        half = self.n_fft // 2
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=2) * self.window[:, None]   # (K, C, n_fft, t)
        span = (t - 1) * self.hop + self.n_fft
        local = F.fold(frames.reshape(K * C, self.n_fft, t), output_size=(1, span),
                       kernel_size=(1, self.n_fft), stride=(1, self.hop)).reshape(K, C, span)
        wsq = (self.window ** 2)[:, None].expand(self.n_fft, t)
        local_env = F.fold(wsq[None], output_size=(1, span), kernel_size=(1, self.n_fft),
                           stride=(1, self.hop)).reshape(span)
        start = a * self.hop - half                   # original sample index of local[0]
        # keep only samples inside [emitted, n)
        cut0 = max(self.emitted - start, 0)
        local, local_env = local[..., cut0:], local_env[cut0:]
        start += cut0
        end = min(start + local.shape[-1], self.n)
        local, local_env = local[..., : max(end - start, 0)], local_env[: max(end - start, 0)]
        # grow the pending buffer to cover [emitted, end) and add
        need = max(end - self.emitted, 0)
        if self.buf is None:
            self.buf = torch.zeros((K, C, need), dtype=local.dtype)
            self.env = torch.zeros(need, dtype=local_env.dtype)
        elif self.buf.shape[-1] < need:
            grow = need - self.buf.shape[-1]
            self.buf = F.pad(self.buf, (0, grow))
            self.env = F.pad(self.env, (0, grow))
        off = start - self.emitted
        self.buf[..., off: off + local.shape[-1]] += local
        self.env[off: off + local_env.shape[-1]] += local_env
        self.next_frame = b
        # samples before the first sample of frame b are final
        ready = self.n if b == self.n_frames else min(self.n, b * self.hop - half)
        m = max(ready - self.emitted, 0)
        out = self.buf[..., :m] / self.env[:m].clamp_min(1e-11)
        self.buf, self.env = self.buf[..., m:], self.env[m:]
        self.emitted += m
        return out.permute(0, 2, 1).numpy().astype(np.float32, copy=False)


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
    import torch

    device = getattr(separator, "device", None) or "cpu"
    with torch.inference_mode():
        mask, logits = separator.masks(mag.to(device))
    mask = mask.detach().to("cpu", torch.float32)
    logits = None if logits is None else logits.detach().to("cpu", torch.float32).numpy()
    return mask, logits


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
    import torch

    weightings = tuple(weightings or (config.weighting,))
    for w in weightings:
        if w not in WEIGHTINGS and not (w == ORACLE and oracle is not None):
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not {w!r}"
                             + (" (oracle needs the reference gates)" if w == ORACLE else ""))
    if oracle is not None:
        oracle = np.where(np.isnan(oracle), 1.0, np.asarray(oracle, dtype=np.float64) > 0.5)
        oracle = oracle.astype(np.float32)
    n_fft, hop = int(separator.n_fft), int(separator.hop)
    T = num_frames(n_samples, hop)
    ctx = _context(separator, config)
    chunk = _chunk_frames(separator, config, T)
    window = hann(n_fft)
    olas = {w: OverlapAdd(n_samples, n_fft, hop, window) for w in weightings}
    use_activity = bool(separator.has_activity)
    for a in range(0, T, chunk):
        b = min(a + chunk, T)
        lo, hi = max(0, a - ctx), min(T, b + ctx)
        spec = stft_frames(read, n_samples, n_fft, hop, lo, hi, window)     # (C, F, hi - lo)
        mask, logits = _masks(separator, spec.abs())
        if mask.ndim != 4 or tuple(mask.shape[1:]) != tuple(spec.shape):
            raise ValueError(f"separator {separator.name!r}: mask shape {tuple(mask.shape)}, "
                             f"expected (targets, {', '.join(map(str, spec.shape))})")
        mask = mask[..., a - lo: b - lo]
        mix = spec[..., a - lo: b - lo]
        prob = decision = None
        if use_activity and logits is not None:
            prob, decision, _ = activity_weights(logits, config, lo, hi, a, b, T)
        if spectra:
            yield {"frames": (a, b), "spectrum": mask * mix, "probability": prob, "decision": decision}
            continue
        audio = {}
        for w in weightings:
            weighted = mask
            if prob is not None and w == "hard":
                weighted = mask * torch.from_numpy(decision.astype(np.float32))[:, None, None, :]
            elif prob is not None and w == "soft":
                weighted = mask * torch.from_numpy(prob)[:, None, None, :]
            elif w == ORACLE:
                gate = np.ones((mask.shape[0], b - a), dtype=np.float32)
                labelled = oracle[:, a:b]
                gate[:, : labelled.shape[1]] = labelled    # frames past the labels stay open
                weighted = mask * torch.from_numpy(gate)[:, None, None, :]
            if config.wiener:
                est = torch.from_numpy(wiener_filter((weighted * mix.abs()).numpy(), mix.numpy(),
                                                     config.wiener_iterations, first_frame=a))
            else:
                est = weighted * mix                                              # mixture phase
            audio[w] = olas[w].push(est)
        first = olas[weightings[0]]
        m = next(iter(audio.values())).shape[1]
        yield {"start": first.emitted - m, "audio": audio, "frames": (a, b),
               "probability": prob, "decision": decision}


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
    prob = dec = None
    for part in separate_stream(lambda s, c: mixture[s: s + c], n, separator, config, weightings,
                                oracle=oracle):
        s = part["start"]
        for w, audio in part["audio"].items():
            estimates[w][:, s: s + audio.shape[1]] = audio
        if part["probability"] is not None:
            if prob is None:
                prob = np.zeros((K, T), dtype=np.float32)
                dec = np.zeros((K, T), dtype=bool)
            a, b = part["frames"]
            prob[:, a:b] = part["probability"]
            dec[:, a:b] = part["decision"]
    return {w: Separation(list(separator.targets), int(separator.sample_rate), int(separator.hop),
                          estimates[w], prob, dec) for w in weightings}


def separate_oneshot(mixture: np.ndarray, separator, config: SeparationConfig = SeparationConfig()) -> Separation:
    """The whole track in one pass with ``torch.stft`` / ``torch.istft`` and
    ``scipy.signal.medfilt``: the reference the chunked path must equal (short tracks only)."""
    import torch
    from scipy.signal import medfilt

    n_fft, hop = int(separator.n_fft), int(separator.hop)
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(mixture, dtype=np.float32).T))
    window = hann(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)
    mask, logits = _masks(separator, spec.abs())
    prob = dec = None
    if separator.has_activity and logits is not None:
        prob = sigmoid(logits).astype(np.float32)
        raw = (prob >= config.thresholds(prob.shape[0])).astype(np.float64)
        dec = np.stack([medfilt(r, config.median_frames) for r in raw]) > 0.5
        if config.weighting == "hard":
            mask = mask * torch.from_numpy(dec.astype(np.float32))[:, None, None, :]
        elif config.weighting == "soft":
            mask = mask * torch.from_numpy(prob)[:, None, None, :]
    if config.wiener:
        est = torch.from_numpy(wiener_filter((mask * spec.abs()).numpy(), spec.numpy(),
                                             config.wiener_iterations))
    else:
        est = mask * spec
    K = est.shape[0]
    audio = torch.istft(est.reshape(K * 2, *est.shape[2:]), n_fft, hop, window=window,
                        center=True, length=x.shape[1]).reshape(K, 2, -1)
    return Separation(list(separator.targets), int(separator.sample_rate), hop,
                      audio.permute(0, 2, 1).numpy().astype(np.float32), prob, dec)


# -------------------------------------------------------------------------- user files
def separate_file(audio_path, separator, out_dir, config: SeparationConfig = SeparationConfig()) -> dict:
    """Separate a user's audio file (WAV / FLAC / MP3 / anything ffmpeg decodes) with bounded
    memory: ``out_dir/<target>.wav`` (float, the model's rate) for every target, and, for a
    model with activity, ``activity.csv`` + ``activity.parquet`` (one row per frame: time,
    probability and the applied decision per target). Returns a summary dict."""
    import contextlib
    from pathlib import Path

    import soundfile as sf

    from iass.evaluation.audio_input import open_mixture
    from iass.io import atomic_path, atomic_write_parquet, atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr, hop = int(separator.sample_rate), int(separator.hop)
    with open_mixture(audio_path, sr) as mix, contextlib.ExitStack() as stack:
        writers = {}
        for target in separator.targets:
            tmp = stack.enter_context(atomic_path(out_dir / f"{target}.wav"))
            writers[target] = stack.enter_context(
                sf.SoundFile(str(tmp), "w", samplerate=sr, channels=2, subtype="FLOAT", format="WAV"))
        T = num_frames(mix.n_samples, hop)
        prob = dec = None
        for part in separate_stream(mix.read, mix.n_samples, separator, config):
            audio = part["audio"][config.weighting]
            for k, target in enumerate(separator.targets):
                writers[target].write(audio[k])
            if part["probability"] is not None:
                if prob is None:
                    prob = np.zeros((len(separator.targets), T), dtype=np.float32)
                    dec = np.zeros((len(separator.targets), T), dtype=bool)
                a, b = part["frames"]
                prob[:, a:b], dec[:, a:b] = part["probability"], part["decision"]
        for w in writers.values():
            w.close()                     # flush before atomic_path renames the file
        n_samples, notes = mix.n_samples, list(mix.notes)
    files = [str(out_dir / f"{t}.wav") for t in separator.targets]
    if prob is not None:
        import polars as pl

        cols = {"frame": np.arange(T, dtype=np.int32),
                "time_s": (np.arange(T) * hop / sr).astype(np.float64)}
        for k, target in enumerate(separator.targets):
            cols[f"{target}_probability"] = prob[k]
            cols[f"{target}_active"] = dec[k]
        table = pl.DataFrame(cols)
        atomic_write_parquet(out_dir / "activity.parquet", table)
        csv = table.with_columns([pl.col(c).cast(pl.Int8) for c in table.columns if c.endswith("_active")])
        atomic_write_text(out_dir / "activity.csv", csv.write_csv(float_precision=4))
        files += [str(out_dir / "activity.csv"), str(out_dir / "activity.parquet")]
    return {"input": str(audio_path), "samples": n_samples, "seconds": n_samples / sr,
            "sample_rate": sr, "targets": list(separator.targets), "files": files, "notes": notes,
            "weighting": config.weighting if prob is not None else "none"}
