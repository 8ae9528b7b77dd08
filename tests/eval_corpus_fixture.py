"""A tiny built corpus in the REAL corpus format for the evaluation tests, and a band separator.

Every instrument plays notes (sinusoids with an attack/decay envelope) inside its OWN frequency
band, only inside known time regions, over a low broadband noise floor. So:
- the frame labels are exact (frame t is active iff sample t * hop lies in a region);
- a fixed per-band mask is a reasonable separator (good, not perfect: it keeps the other stems'
  noise in its band and the mask carries a deterministic error), the ideal binary mask is better,
  and the mixture itself is worse: the order the references must show;
- activity is visible as band energy.

Tables use the schemas of ``iass.pipelines.corpus_format``; WAVs are float stereo at 44.1 kHz;
the manifest has the keys the reader relies on. One MUSDB-like test track leaves the guitars and
the piano unknown (inside its ``other`` stem).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from corpus_fixture import FixtureTrack, frame_labels, gate, write_corpus  # noqa: F401 (frame_labels: for tests)
from iass.pipelines import corpus_format as cf

SR = cf.SAMPLE_RATE
HOP = 1024
N_FFT = 4096

#: instrument -> its frequency band (Hz); disjoint, so a band mask separates
BAND = {
    "electric_bass": (60.0, 200.0), "piano": (250.0, 550.0), "lead_vocals": (600.0, 1150.0),
    "backing_vocals": (1250.0, 1800.0), "electric_guitar": (2000.0, 2900.0),
    "acoustic_guitar": (3100.0, 4400.0), "organ": (4600.0, 5700.0), "drums": (6000.0, 9500.0),
    "other": (10500.0, 14000.0),
}
#: instrument -> the target it feeds (None: part of the rest)
TARGET_OF = {
    "electric_bass": "bass", "piano": "piano", "lead_vocals": "vocals", "backing_vocals": "vocals",
    "electric_guitar": "electric_guitar", "acoustic_guitar": "acoustic_guitar", "drums": "drums",
    "organ": None, "other": None,
}
TARGETS = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]


EvalTrack = FixtureTrack  # same fields: native_id, split, seconds, stems, source, unknown


def render_stem(instrument: str, regions, n: int, seed: int) -> np.ndarray:
    """(n, 2) float32: notes in the instrument's band inside the regions, plus a noise floor."""
    rng = np.random.default_rng(seed)
    lo, hi = BAND[instrument]
    t = np.arange(n) / SR
    out = np.zeros((n, 2))
    if instrument in ("drums", "other"):
        # band-limited noise bursts: filtered in the FFT domain, hits every 0.25 s
        spec = np.fft.rfft(rng.standard_normal((2, n)), axis=1)
        f = np.fft.rfftfreq(n, 1 / SR)
        spec[:, (f < lo) | (f > hi)] = 0
        noise = np.fft.irfft(spec, n, axis=1).T
        noise /= np.abs(noise).max() + 1e-9
        env = np.exp(-((t % 0.25) / 0.06))
        out = 0.35 * noise * env[:, None]
    else:
        note_len = 0.3
        for k in range(int(np.ceil(n / SR / note_len))):
            a, b = int(k * note_len * SR), min(int((k + 1) * note_len * SR), n)
            f0 = rng.uniform(lo, hi - (hi - lo) * 0.1)
            tt = t[a:b] - t[a]
            env = np.minimum(tt / 0.01, 1.0) * np.exp(-tt / 0.4)
            phase = rng.uniform(0, 2 * np.pi)
            note = 0.25 * env * np.sin(2 * np.pi * f0 * tt + phase)
            out[a:b, 0] += note
            out[a:b, 1] += 0.7 * note          # panned left: the channels differ
    out += 0.004 * rng.standard_normal((n, 2))  # broadband floor: leaks into every band
    return (out * gate(regions, n)[:, None]).astype(np.float32)


def default_tracks(seconds: float = 3.0) -> list[EvalTrack]:
    s = seconds
    full = [(0.0, s)]
    tracks = [
        EvalTrack("test-a", "test", s, {
            "lead_vocals": [(0.4, 2.2), (2.6, s)], "backing_vocals": [(1.0, 2.0)], "drums": full,
            "electric_bass": full, "piano": [(0.0, 2.5)], "electric_guitar": [(1.5, s)],
            "organ": [(0.0, s)],
        }),
        EvalTrack("test-b", "test", s, {
            "lead_vocals": [(0.0, 3.0)], "drums": [(0.0, 2.0), (2.5, s)], "electric_bass": [(0.5, s)],
            "acoustic_guitar": [(0.0, s)], "piano": [(2.0, s)],
        }),
        EvalTrack("test-c", "test", s, {
            "lead_vocals": [(1.0, s)], "drums": full, "electric_bass": full,
            "electric_guitar": [(0.0, 2.0)], "acoustic_guitar": [(2.0, s)], "organ": [(1.0, 3.0)],
        }),
        EvalTrack("musdb-like", "test", s, {
            "lead_vocals": [(0.5, s)], "drums": full, "electric_bass": full, "other": full,
        }, source="musdb", unknown=["electric_guitar", "acoustic_guitar", "piano"]),
        EvalTrack("train-a", "train", s, {
            "lead_vocals": [(0.2, 3.0)], "drums": full, "electric_bass": full,
            "electric_guitar": [(1.0, s)], "acoustic_guitar": [(0.0, 1.5)], "piano": [(0.5, s)],
        }),
        EvalTrack("valid-a", "valid", s, {
            "lead_vocals": [(0.0, 2.0)], "drums": full, "electric_bass": [(1.0, s)],
            "electric_guitar": [(0.0, s)], "piano": [(1.0, 3.0)], "acoustic_guitar": [(2.0, s)],
        }),
    ]
    return tracks


def write_eval_corpus(root: str | Path, tracks: list[EvalTrack] | None = None, hop: int = HOP,
                      num_shards: int = 4) -> dict[str, EvalTrack]:
    """Write the corpus under ``root``; return {track_id: EvalTrack} (the ground truth)."""
    return write_corpus(root, tracks if tracks is not None else default_tracks(),
                        lambda n_track, k, inst, regions, n: render_stem(inst, regions, n, seed=100 * n_track + k),
                        hop, num_shards, built_by="tests/eval_corpus_fixture.py", artist="eval fixture")


# ------------------------------------------------------------------------ test separators
class BandSeparator:
    """A separator of the inference protocol for this fixture: each target's mask is its bands
    (with a deterministic, content-dependent error of +-``error``), its activity logit the
    band energy smoothed over +-2 frames (a receptive field in time, so chunk context matters).
    Picklable, so evaluation worker processes can use it."""

    context_frames = 2

    def __init__(self, targets=TARGETS, sample_rate: int = SR, n_fft: int = N_FFT, hop: int = HOP,
                 error: float = 0.3, has_activity: bool = True, name: str = "band"):
        self.targets = list(targets)
        self.sample_rate, self.n_fft, self.hop = sample_rate, n_fft, hop
        self.error, self.has_activity, self.name = error, has_activity, name
        freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
        self.band = np.zeros((len(self.targets), len(freqs)), dtype=np.float32)
        for k, target in enumerate(self.targets):
            for inst, tgt in TARGET_OF.items():
                if tgt == target:
                    lo, hi = BAND[inst]
                    self.band[k, (freqs >= lo - 20) & (freqs <= hi + 20)] = 1.0

    def masks(self, mixture_mag):
        import torch
        import torch.nn.functional as F

        band = torch.from_numpy(self.band)                                # (K, F)
        wobble = 1.0 + self.error * torch.sin(3e3 * mixture_mag)          # (C, F, T), in [1-e, 1+e]
        mask = band[:, None, :, None] * wobble[None]
        energy = torch.einsum("kf,cft->kt", band, mixture_mag ** 2) / band.sum(1, keepdim=True).clamp_min(1)
        energy = F.avg_pool1d(energy[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0]
        logits = 1.5 * (torch.log10(energy + 1e-12) - 1.0)
        return mask.clamp_min(0), (logits if self.has_activity else None)
