"""The song model: the instruments the synthesizer plays, notes, parts and songs.

Instruments are the canonical taxonomy names (``datasets/taxonomy.yaml``), one part each:

=============== ======================================= ==========================================
instrument      what it plays                            GM programs (0-based)
=============== ======================================= ==========================================
lead_vocals     lead melody in phrases (stands in for   52 choir aahs, 53 voice oohs, 54 synth
                a singer, male or female register)       voice, 85 lead 6 (voice)
drums           kit groove (GM channel 10) with fills    standard kit, bank 128
                and crashes at section starts
electric_bass   roots, fifths, approach notes           33, 34, 35
electric_guitar clean arpeggios / offbeats, or          clean 26, 27, 28; distorted 29, 30
                distorted power chords
acoustic_guitar strummed six-string voicings             24, 25
piano           block chords, arpeggios, ballad comping  0, 1
bowed_strings   sustained voicings (distractor)          48, 49
organ           held chords or stabs (distractor)        16, 17, 18
synth           pad chords (distractor)                  88, 89, 90, 94, 95
brass           accented stabs (distractor)              61, 62
=============== ======================================= ==========================================

A part's notes are collected by a :class:`NoteWriter` in beats and stored in seconds (exact
float64, rounded to the microsecond): they are the activity labels of the rendered stems.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: every instrument the synthesizer can play, in render order (the six targets first)
INSTRUMENTS = (
    "lead_vocals", "drums", "electric_bass", "electric_guitar", "acoustic_guitar", "piano",
    "bowed_strings", "organ", "synth", "brass",
)
DISTRACTORS = ("bowed_strings", "organ", "synth", "brass")

#: chance that a song has the instrument (when --instruments does not fix the line-up)
PRESENCE = {
    "lead_vocals": 0.9, "drums": 0.9, "electric_bass": 0.9, "electric_guitar": 0.75,
    "acoustic_guitar": 0.6, "piano": 0.75,
    "bowed_strings": 0.35, "organ": 0.3, "synth": 0.4, "brass": 0.25,
}

PROGRAMS = {
    "lead_vocals": (52, 53, 54, 85),
    "electric_bass": (33, 34, 35),
    "acoustic_guitar": (24, 25),
    "piano": (0, 1),
    "bowed_strings": (48, 49),
    "organ": (16, 17, 18),
    "synth": (88, 89, 90, 94, 95),
    "brass": (61, 62),
}
CLEAN_GUITAR = (26, 27, 28)
DISTORTED_GUITAR = (29, 30)

#: mixing: stem loudness (dB, before the song's peak normalisation) and pan range
LEVEL_DB = {
    "lead_vocals": 0.0, "drums": 0.0, "electric_bass": -1.0, "electric_guitar": -3.0,
    "acoustic_guitar": -3.0, "piano": -3.0, "bowed_strings": -6.0, "organ": -6.0, "synth": -6.0,
    "brass": -5.0,
}
PAN = {
    "lead_vocals": (0.0, 0.05), "drums": (0.0, 0.1), "electric_bass": (0.0, 0.05),
    "electric_guitar": (0.3, 0.7), "acoustic_guitar": (0.3, 0.7), "piano": (0.0, 0.3),
    "bowed_strings": (0.0, 0.6), "organ": (0.0, 0.6), "synth": (0.0, 0.6), "brass": (0.0, 0.5),
}


@dataclass
class Note:
    pitch: int
    velocity: int
    onset: float    # seconds
    offset: float   # seconds (> onset)


@dataclass
class Part:
    instrument: str          # canonical taxonomy name
    program: int             # GM program (0-based); the drum kit uses 0 with is_drum
    is_drum: bool
    variant: str             # 'male'/'female' (lead), 'clean'/'distorted' (electric guitar), ''
    notes: list[Note]
    level_db: float          # stem loudness relative to the others (before peak normalisation)
    pan: float               # -1 (left) .. 1 (right), constant-power

    def intervals(self) -> list[tuple[float, float]]:
        return [(n.onset, n.offset) for n in self.notes]

    def active_fraction(self, duration: float) -> float:
        """Share of the song covered by the union of the note intervals."""
        return union_length(self.intervals()) / duration


@dataclass
class Song:
    seed: int
    index: int
    artist: str
    title: str
    tempo: float
    key: str
    mode: str
    duration: float
    sections: list[dict]     # {name, start_s, end_s, bars: [first, last+1], progression}
    parts: list[Part] = field(default_factory=list)

    @property
    def instruments(self) -> list[str]:
        return [p.instrument for p in self.parts]

    def part(self, instrument: str) -> Part:
        return next(p for p in self.parts if p.instrument == instrument)

    def to_pretty_midi(self):
        """The song as a ``pretty_midi.PrettyMIDI`` (one instrument per part)."""
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(initial_tempo=float(self.tempo))
        for part in self.parts:
            inst = pretty_midi.Instrument(program=part.program, is_drum=part.is_drum,
                                          name=part.instrument)
            inst.notes = [pretty_midi.Note(n.velocity, n.pitch, n.onset, n.offset) for n in part.notes]
            pm.instruments.append(inst)
        return pm


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for on, off in sorted(intervals):
        if off <= end:
            continue
        total += off - max(on, end)
        end = off
    return total


def song_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index)])))


class NoteWriter:
    """Collects notes in beats; converts to seconds at the song tempo, clipped to the song."""

    def __init__(self, spb: float, duration: float):
        self.spb, self.duration, self.notes = spb, duration, []

    def add(self, pitch: int, vel: int, beat: float, length_beats: float | None = None,
            length_s: float | None = None) -> None:
        onset = beat * self.spb
        offset = onset + (length_s if length_s is not None else length_beats * self.spb)
        offset = min(offset, self.duration)
        if onset >= self.duration - 0.05 or offset - onset < 0.02:
            return
        self.notes.append(Note(int(pitch), int(np.clip(vel, 1, 127)), round(onset, 6),
                               round(offset, 6)))


def velocity(rng, base: int, spread: int = 10) -> int:
    """A humanised MIDI velocity: ``base`` +- ``spread``, within 20..127."""
    return int(np.clip(base + rng.integers(-spread, spread + 1), 20, 127))
