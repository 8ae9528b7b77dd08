"""Render a composed song to stems with General MIDI soundfonts (tinysoundfont).

Each part is rendered alone (its own MIDI channel state, from silence) to 44.1 kHz stereo, so a
stem holds exactly one instrument, through the soundfont the part drew from the pool
(:mod:`iass.pipelines.synth.soundfonts`; default TimGM6mb + Merlin). Then, per stem:

* **release gate**: a note keeps sounding after its note-off (the soundfont's release). Audio
  later than ``offset + RELEASE_S`` of every note is set to exactly zero, with a raised-cosine
  fade over the last ``FADE_S`` of that margin. The labels are the note times; the release
  margin is the only place a labelled-silent frame can hold sound, and it is bounded.
* **level and pan**: the stem is scaled to a loudness (RMS over its sounding samples) set by the
  part's ``level_db``, then panned with a constant-power law.

The song is peak-normalised with ONE gain for all stems to -1 dBFS (the peak over the mixture and
every stem, so nothing clips), then every stem is rounded to the 24-bit PCM grid (integers / 2**23)
and the mixture is the integer sum of the stems. Integers add exactly, so ``mixture == sum of
stems`` holds bit for bit in 24-bit PCM and in float32 WAV, in any summation order (all partial
sums stay far below 2**24). Everything is computed in a fixed order from the song, so the same
song gives the same samples on every run.
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np

from iass.errors import AudioError
from iass.pipelines.synth import soundfonts
from iass.pipelines.synth.song import Part, Song

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
RELEASE_S = 0.25          # the release margin: sound allowed after a note's offset
FADE_S = 0.1              # the gate's fade-out, inside the release margin
PEAK_DBFS = -1.0
PCM_SCALE = 1 << 23       # 24-bit grid: sample = integer / 2**23
REFERENCE_RMS = 0.1       # stem RMS (over sounding samples) at level_db = 0, before normalising


def _fresh_synth(font: soundfonts.SoundFont | None = None):
    """A new synthesizer for every part (~20 ms). A reused one is not a clean slate: after
    ``sounds_off`` some voice state survives (measured: a synth-voice part rendered after another
    song differs by up to 0.05 from the same part rendered first), which would make a song's
    samples depend on what the worker rendered before it."""
    import tinysoundfont

    font = font or soundfonts.resolve("timgm6mb")
    synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    sfid = synth.sfload(soundfonts.soundfont_bytes(font.path))
    return synth, sfid


def render_part_raw(part: Part, n_samples: int,
                    font: soundfonts.SoundFont | None = None) -> np.ndarray:
    """The part's notes through ``font`` (default TimGM6mb): float32 (n_samples, 2), no gate,
    gain or pan."""
    synth, sfid = _fresh_synth(font)
    chan = 9 if part.is_drum else 0
    synth.program_select(chan, sfid, 128 if part.is_drum else 0, part.program, part.is_drum)
    # (sample, order, pitch, velocity): note-offs before note-ons at the same sample, so a
    # repeated pitch is re-struck instead of cut
    events = []
    for n in part.notes:
        events.append((int(round(n.onset * SAMPLE_RATE)), 1, n.pitch, n.velocity))
        events.append((int(round(n.offset * SAMPLE_RATE)), 0, n.pitch, 0))
    events.sort()
    out = np.zeros((n_samples, 2), dtype=np.float32)
    pos = 0
    for sample, kind, pitch, velocity in events:
        sample = min(sample, n_samples)
        if sample > pos:
            out[pos:sample] = np.frombuffer(synth.generate_simple(sample - pos),
                                            dtype=np.float32).reshape(-1, 2)
            pos = sample
        if kind:
            synth.noteon(chan, pitch, velocity)
        else:
            synth.noteoff(chan, pitch)
    if pos < n_samples:
        out[pos:] = np.frombuffer(synth.generate_simple(n_samples - pos),
                                  dtype=np.float32).reshape(-1, 2)
    return out


def sounding_intervals(part: Part, margin: float = 0.0) -> list[tuple[float, float]]:
    """Union of the note intervals, each extended by ``margin`` seconds after its offset."""
    merged: list[list[float]] = []
    for on, off in sorted((n.onset, n.offset + margin) for n in part.notes):
        if merged and on <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], off)
        else:
            merged.append([on, off])
    return [(a, b) for a, b in merged]


def apply_release_gate(audio: np.ndarray, part: Part) -> None:
    """In place: keep sound while notes play (+ release margin, faded out), zero elsewhere."""
    n = len(audio)
    fade = int(round(FADE_S * SAMPLE_RATE))
    ramp = (0.5 * (1.0 + np.cos(np.pi * (np.arange(fade) + 0.5) / fade))).astype(audio.dtype)
    done = 0
    for on, off in sounding_intervals(part, RELEASE_S):
        a = min(int(round(on * SAMPLE_RATE)), n)
        b = int(round(off * SAMPLE_RATE))
        audio[done:a] = 0
        full = max(a, b - fade)
        end = min(b, n)
        if full < end:
            audio[full:end] *= ramp[: end - full, None]
        done = max(done, min(b, n))
    audio[done:] = 0


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan law, normalised so the centre is (1, 1)."""
    theta = (float(pan) + 1.0) * math.pi / 4.0
    return math.cos(theta) * math.sqrt(2.0), math.sin(theta) * math.sqrt(2.0)


def _quantise_gain(g: float) -> float:
    # gains rounded to 2**-24 relative steps, so a last-bit difference in a float reduction on
    # another machine cannot change a sample
    e = math.floor(math.log2(g))
    return math.ldexp(math.floor(math.ldexp(g, 24 - e)), e - 24)


def part_fonts(song: Song, pool=None) -> dict[str, soundfonts.SoundFont]:
    """instrument -> the soundfont its part draws from ``pool`` (default: TimGM6mb alone)."""
    pool = tuple(pool) if pool else (soundfonts.resolve("timgm6mb"),)
    return {p.instrument: soundfonts.draw(pool, song.seed, song.index, p.instrument, p.program,
                                          p.is_drum) for p in song.parts}


def render_song(song: Song, fonts: dict[str, soundfonts.SoundFont] | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stems and mixture as int32 arrays (n_samples, 2) on the 24-bit grid (value / 2**23);
    ``fonts``: instrument -> soundfont (:func:`part_fonts`; default TimGM6mb for every part).

    ``mixture == sum(stems)`` exactly; ``|sample| <= 10**(PEAK_DBFS/20) * 2**23``."""
    n = int(round(song.duration * SAMPLE_RATE))
    fonts = fonts or part_fonts(song)
    leveled: dict[str, np.ndarray] = {}
    for part in song.parts:
        audio = render_part_raw(part, n, fonts[part.instrument])
        apply_release_gate(audio, part)
        # loudness over the samples where notes sound (float64 sums: the same on every machine
        # up to the last bit, which the quantised gain absorbs)
        energy, count = 0.0, 0
        for on, off in sounding_intervals(part):
            seg = audio[int(round(on * SAMPLE_RATE)):int(round(off * SAMPLE_RATE))].astype(np.float64)
            energy += float(np.sum(seg * seg))
            count += seg.size
        rms = math.sqrt(energy / count) if count else 0.0
        if rms <= 1e-9:
            # a part the soundfont does not sound (never with the shipped programs)
            log.warning("song %r: %s (program %d, %s) renders silent; left out", song.title,
                        part.instrument, part.program, fonts[part.instrument].file)
            continue
        gain = _quantise_gain(REFERENCE_RMS * 10 ** (part.level_db / 20.0) / rms)
        gl, gr = pan_gains(part.pan)
        audio *= np.array([gain * gl, gain * gr], dtype=np.float32)
        leveled[part.instrument] = audio
    if not leveled:
        raise AudioError(f"song {song.title!r}: no part produced sound")
    total = np.zeros((n, 2), dtype=np.float32)
    for a in leveled.values():          # in place: np.sum over a stacked list costs 5x more
        total += a
    peak = max(float(np.max(np.abs(total))), max(float(np.max(np.abs(a))) for a in leveled.values()))
    norm = _quantise_gain(10 ** (PEAK_DBFS / 20.0) / peak)
    stems = {}
    mixture = np.zeros((n, 2), dtype=np.int64)
    scale = np.float32(norm * PCM_SCALE)
    for inst, a in leveled.items():
        a *= scale
        stems[inst] = np.rint(a, out=a).astype(np.int32)
        mixture += stems[inst]
    if np.max(np.abs(mixture)) >= PCM_SCALE:   # cannot happen after normalising; never clip
        raise AudioError(f"song {song.title!r}: mixture exceeds full scale after normalisation")
    return stems, mixture.astype(np.int32)


def to_float(pcm: np.ndarray) -> np.ndarray:
    """24-bit grid integers -> float32 (exact: |values| < 2**23)."""
    return (pcm.astype(np.float32) / np.float32(PCM_SCALE)).astype(np.float32)


def worker_count(workers: int | None) -> int:
    if workers and workers > 0:
        return int(workers)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
