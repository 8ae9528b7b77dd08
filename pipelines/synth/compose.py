"""Procedural songs: a song form, harmony and one MIDI part per instrument, from a seed.

A song is a 4/4 piece in one key and mode at a tempo of 70..170 BPM. Its form is a sequence of
sections (intro, verse, chorus, break, verse, chorus, outro, scaled to the requested duration);
each section has a chord progression (one chord per bar). Every instrument plays only in some
bars: an arrangement decides per section who plays (drums rest in the break, the lead rests in
the intro ...), then bars are switched on or off at the edges of the played stretches until the
instrument's share of the song is near a per-song target drawn between 30 % and 95 % (sparse
patterns such as stabs get more bars, so their notes still sound in about 30 % of the song or
more), and every instrument rests in at least one complete bar. So every instrument has real
entries and real silences, which the activity labels must capture.

Note times are the labels. Drum hits are one-shots (the soundfont ignores their note-off), so a
hit's length is chosen: how long its sample stays within ~40 dB of its peak, a new hi-hat stroke
choking the previous one, and at least up to the kit's next hit when that comes within 0.5 s
(a groove is one sounding kit; its activity does not flicker between eighth notes).

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

Everything is drawn from ``numpy.random.Generator(PCG64(SeedSequence([seed, index])))``, whose
streams are specified bit for bit, so a song is the same on every machine. Note times are exact
(seconds, float64); they are the activity labels of the rendered stems.
"""
from __future__ import annotations

import bisect
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

SECTION_NAMES = ("intro", "verse", "chorus", "break", "outro")
#: chance that an instrument plays in a section of each kind
PLAYS_IN = {
    #                  intro verse chorus break outro
    "lead_vocals":     (0.05, 0.95, 0.95, 0.10, 0.30),
    "drums":           (0.40, 0.90, 1.00, 0.20, 0.50),
    "electric_bass":   (0.40, 0.90, 1.00, 0.30, 0.50),
    "electric_guitar": (0.40, 0.50, 0.90, 0.30, 0.40),
    "acoustic_guitar": (0.60, 0.70, 0.60, 0.50, 0.60),
    "piano":           (0.60, 0.60, 0.70, 0.60, 0.60),
    "bowed_strings":   (0.30, 0.30, 0.60, 0.50, 0.50),
    "organ":           (0.30, 0.50, 0.60, 0.30, 0.30),
    "synth":           (0.50, 0.40, 0.60, 0.50, 0.50),
    "brass":           (0.10, 0.30, 0.70, 0.20, 0.30),
}
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

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# progressions as 0-based scale degrees, one chord per bar
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4),
              (3, 0, 4, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (5, 6, 0, 0)),
}
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# GM percussion keys. A drum hit ignores its note-off (a one-shot), so a hit's note length is how
# long the TimGM6mb sample stays within ~40 dB of its peak (measured): that is its label.
# Cymbals ring for seconds; they are held (then gated) for at most 1.6 s.
KICK, SNARE, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 42, 44, 46, 49, 51
TOMS = (50, 47, 45, 43)
DRUM_RING_S = {KICK: 0.1, SNARE: 0.2, CLOSED_HAT: 0.08, PEDAL_HAT: 0.08, OPEN_HAT: 0.6,
               CRASH: 1.6, RIDE: 0.8, 50: 0.6, 47: 0.6, 45: 0.6, 43: 0.6}
DRUM_BRIDGE_S = 0.5

ADJECTIVES = (
    "Amber", "Silver", "Quiet", "Electric", "Golden", "Hollow", "Crimson", "Velvet", "Distant",
    "Broken", "Bright", "Paper", "Northern", "Midnight", "Wild", "Gentle", "Restless", "Neon",
    "Faded", "Open", "Lonely", "Secret", "Western", "Burning", "Frozen", "Static", "Blue", "Glass",
    "Hidden", "Lucky", "Rusty", "Sunday",
)
NOUNS = (
    "Harbour", "Highway", "Garden", "River", "Signal", "Window", "Morning", "Engine", "Lantern",
    "Orchard", "Season", "Shadow", "Station", "Summer", "Thunder", "Valley", "Weather", "Letter",
    "Mirror", "Circle", "Motel", "Island", "Frontier", "Parade", "Canyon", "Avenue", "Tide",
    "Compass", "Satellite", "Meadow", "Ember", "Skyline",
)


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


# ------------------------------------------------------------------------------------ the form
def make_form(n_bars: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """Section names and lengths in bars, summing to ``n_bars`` (short songs keep fewer sections)."""
    templates = (
        ("intro", "verse", "chorus", "break", "verse", "chorus", "outro"),
        ("intro", "verse", "chorus", "break", "chorus", "outro"),
        ("intro", "verse", "chorus", "break", "outro"),
        ("intro", "verse", "chorus", "outro"),
        ("verse", "chorus", "outro"),
        ("verse", "chorus"),
    )
    length_of = {"intro": (1, 2, 2, 4), "verse": (4, 8), "chorus": (4, 8), "break": (2, 4),
                 "outro": (1, 2, 4)}
    # the longest form whose sections still get about two bars each
    need = (16, 12, 9, 6, 3, 0)
    template = next(t for t, m in zip(templates, need) if n_bars >= m)
    if len(template) > n_bars:   # a song of 2 bars
        template = template[:n_bars]
    base = [int(rng.choice(length_of[name])) for name in template]
    scale = n_bars / sum(base)
    lengths = [max(1, int(round(b * scale))) for b in base]
    # fix rounding: take from / give to the longest sections
    while sum(lengths) > n_bars:
        lengths[int(np.argmax(lengths))] -= 1
    while sum(lengths) < n_bars:
        lengths[int(np.argmax(base))] += 1
    return list(zip(template, lengths))


def arrange(instrument: str, form: list[tuple[str, int]], rng: np.random.Generator,
            target: float, n_full: int) -> np.ndarray:
    """Boolean per bar: does the instrument play. Share of bars near ``target`` (0.3..0.95).

    ``n_full`` bars are complete; the last bar may be cut off by the song's end, and every
    instrument must rest in at least one complete bar."""
    probs = PLAYS_IN[instrument]
    bars = []
    for name, length in form:
        plays = rng.random() < probs[SECTION_NAMES.index(name)]
        bars.extend([plays] * length)
    on = np.array(bars, dtype=bool)
    n = len(on)
    lo, hi = max(1, int(math.ceil(0.3 * n))), max(1, min(n - 1, int(math.floor(0.95 * n))))
    want = int(np.clip(round(target * n), lo, hi))
    # grow or shrink at the edges of played stretches, so entries and exits stay musical
    for _ in range(4 * n):
        count = int(on.sum())
        if count == want:
            break
        if count < want:
            edges = [i for i in range(n) if not on[i] and (
                (i > 0 and on[i - 1]) or (i + 1 < n and on[i + 1]))]
            if not edges:
                edges = [i for i in range(n) if not on[i]]
            on[edges[int(rng.integers(len(edges)))]] = True
        else:
            edges = [i for i in range(n) if on[i] and (
                i == 0 or not on[i - 1] or i + 1 == n or not on[i + 1])]
            on[edges[int(rng.integers(len(edges)))]] = False
    if n_full >= 2 and on[:n_full].all():
        # silent only in the song's cut-off last bar is no silence: enter late or stop early
        if rng.random() < 0.5:
            on[0] = False
        else:
            on[n_full - 1:] = False
    return on


# ----------------------------------------------------------------------------------- harmony
@dataclass
class Harmony:
    root: int          # key pitch class
    scale: tuple       # MAJOR or MINOR
    degrees: list[int] # chord degree per bar

    def chord(self, bar: int, seventh: bool = False) -> list[int]:
        """Pitch classes (root first) of the bar's chord, diatonic triad (or seventh)."""
        d = self.degrees[bar]
        steps = (0, 2, 4, 6) if seventh else (0, 2, 4)
        return [(self.root + self.scale[(d + s) % 7]) % 12 for s in steps]

    def scale_pitches(self, low: int, high: int) -> list[int]:
        pcs = {(self.root + s) % 12 for s in self.scale}
        return [p for p in range(low, high + 1) if p % 12 in pcs]


def place(pc: int, low: int) -> int:
    """The lowest pitch >= ``low`` with pitch class ``pc``."""
    return low + (pc - low) % 12


def voicing(pcs: list[int], low: int, high: int, rng: np.random.Generator) -> list[int]:
    """A close voicing of the pitch classes within [low, high], random inversion."""
    start = int(rng.integers(len(pcs)))
    order = pcs[start:] + pcs[:start]
    out, p = [], low
    for pc in order:
        p = place(pc, p if not out else out[-1] + 1)
        out.append(p)
    while out[-1] > high and out[0] - 12 >= low - 5:
        out = [q - 12 for q in out]
    return out


# ------------------------------------------------------------------------------------- parts
class _Writer:
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


def _vel(rng, base: int, spread: int = 10) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 20, 127))


def drums_part(on, form, spb, duration, rng, w: _Writer) -> None:
    style = rng.choice(["rock", "halftime", "four", "sixteenth"], p=[0.45, 0.2, 0.2, 0.15])
    section_starts, b = set(), 0
    for _, length in form:
        section_starts.add(b)
        b += length
    section_ends = {s - 1 for s in section_starts if s > 0} | {len(on) - 1}

    def hit(key, beat, vel):
        ring = DRUM_RING_S[key]
        w.add(key, vel, beat, length_s=min(ring, duration))

    for bar in range(len(on)):
        if not on[bar]:
            continue
        b0 = 4 * bar
        fill = bar in section_ends and bar + 1 < len(on) and on[bar + 1] and rng.random() < 0.8
        if bar in section_starts or (bar > 0 and not on[bar - 1]):
            hit(CRASH, b0, _vel(rng, 105))
        groove_beats = 2.0 if fill else 4.0
        ride = style == "halftime" and rng.random() < 0.3
        for k in range(int(groove_beats * 2)):          # eighths
            t = k / 2
            hat = RIDE if ride else CLOSED_HAT
            if style == "sixteenth":
                hit(hat, b0 + t, _vel(rng, 80 if k % 2 == 0 else 60))
                hit(hat, b0 + t + 0.25, _vel(rng, 55))
            else:
                hit(hat, b0 + t, _vel(rng, 85 if k % 2 == 0 else 65))
            if style == "four" and k % 2 == 0:
                hit(KICK, b0 + t, _vel(rng, 105))
                if k in (2, 6):
                    hit(SNARE, b0 + t, _vel(rng, 100))
                if k % 2 == 0 and rng.random() < 0.5:
                    hit(OPEN_HAT, b0 + t + 0.5, _vel(rng, 70))
            elif style == "halftime":
                if k == 0 or (k == 5 and rng.random() < 0.5):
                    hit(KICK, b0 + t, _vel(rng, 105))
                if k == 4:
                    hit(SNARE, b0 + t, _vel(rng, 105))
            else:
                if k in (0, 4) or (k == 5 and rng.random() < 0.4) or (k == 3 and rng.random() < 0.2):
                    hit(KICK, b0 + t, _vel(rng, 105))
                if k in (2, 6):
                    hit(SNARE, b0 + t, _vel(rng, 100))
        if fill:                                            # beats 3-4: snare/tom sixteenths
            toms = list(TOMS)
            for k in range(8):
                t = 2 + k / 4
                key = SNARE if k < 3 else toms[min((k - 3) // 2, 3)]
                if k in (0, 2, 4, 5, 6, 7) or rng.random() < 0.5:
                    hit(key, b0 + t, _vel(rng, 80 + 3 * k))
            hit(KICK, b0 + 2, _vel(rng, 100))
    # the hi-hat is one instrument: a new hat stroke chokes a ringing open hat (the soundfont's
    # exclusive class does the same), so a hat's label ends at the next hat stroke
    hats = sorted((n for n in w.notes if n.pitch in (CLOSED_HAT, PEDAL_HAT, OPEN_HAT)),
                  key=lambda n: n.onset)
    onsets = sorted({n.onset for n in hats})
    for cur in hats:
        later = [t for t in onsets if t > cur.onset]
        if later:
            cur.offset = min(cur.offset, later[0])
    # a groove is one sounding kit: a hit lasts at least until the next hit of the kit when that
    # comes within DRUM_BRIDGE_S (the pieces ring on), so the kit's activity does not flicker
    # between eighth notes at slow tempi
    kit = sorted({n.onset for n in w.notes})
    for n in w.notes:
        i = bisect.bisect_right(kit, n.onset)
        if i < len(kit) and kit[i] - n.onset <= DRUM_BRIDGE_S:
            n.offset = round(max(n.offset, min(kit[i], duration)), 6)


def bass_part(on, harmony, spb, rng, w: _Writer) -> None:
    style = rng.choice(["whole", "eighths", "root_fifth", "syncopated"])
    for bar in range(len(on)):
        if not on[bar]:
            continue
        root = place(harmony.chord(bar)[0], 28)
        fifth = root + 7
        b0 = 4 * bar
        if style == "whole":
            w.add(root, _vel(rng, 95), b0, 3.8)
        elif style == "eighths":
            for k in range(8):
                w.add(root, _vel(rng, 92 if k % 2 == 0 else 80), b0 + k / 2, 0.45)
        elif style == "root_fifth":
            for k, p in enumerate((root, fifth, root + 12, fifth)):
                w.add(p, _vel(rng, 92), b0 + k, 0.9)
        else:
            for t, p, d in ((0, root, 1.4), (1.5, root, 0.45), (2, fifth, 0.9), (3.5, root, 0.45)):
                w.add(p, _vel(rng, 92), b0 + t, d)
        nxt = bar + 1
        if nxt < len(on) and on[nxt] and style != "whole" and rng.random() < 0.3:
            target = place(harmony.chord(nxt)[0], 28)
            w.notes = [n for n in w.notes if n.onset < (b0 + 3.5) * spb - 1e-6]
            step = 1 if (rng.random() < 0.5 or target <= 28) else -1   # nothing below low E
            w.add(target + step, _vel(rng, 85), b0 + 3.5, 0.45)


def lead_part(on, harmony, register, spb, rng, w: _Writer) -> None:
    low, high = (48, 67) if register == "male" else (57, 79)
    pitches = harmony.scale_pitches(low, high)
    idx = len(pitches) // 2
    rhythms = ((1, 1, 1, 1), (0.5, 0.5, 1, 2), (1.5, 0.5, 1, 1), (1, 0.5, 0.5, 2), (2, 1, 1),
               (0.5, 0.5, 0.5, 0.5, 1, 1), (3, 1), (1, 1, 2))
    bar = 0
    while bar < len(on):
        if not on[bar]:
            bar += 1
            continue
        # a phrase: 1 or 2 played bars, then a rest of about a beat
        length = 2 if (bar + 1 < len(on) and on[bar + 1] and rng.random() < 0.7) else 1
        beat = 4 * bar + (0.5 if rng.random() < 0.3 else 0.0)
        end = 4 * (bar + length) - float(rng.choice([0.5, 1.0, 1.5]))
        while beat < end - 0.25:
            for d in rhythms[int(rng.integers(len(rhythms)))]:
                if beat >= end - 0.25:
                    break
                d = min(d, end - beat)
                chord = harmony.chord(min(int(beat // 4), len(on) - 1))
                step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))
                idx = int(np.clip(idx + step, 0, len(pitches) - 1))
                if beat % 2 == 0:            # strong beats land on chord tones
                    near = [i for i, p in enumerate(pitches) if p % 12 in chord]
                    idx = min(near, key=lambda i: abs(i - idx))
                w.add(pitches[idx], _vel(rng, 95, 12), beat, d * 0.92)
                beat += d
        bar += length


def piano_part(on, harmony, rng, w: _Writer) -> None:
    style = rng.choice(["block", "quarters", "arpeggio", "ballad"])
    for bar in range(len(on)):
        if not on[bar]:
            continue
        pcs = harmony.chord(bar, seventh=rng.random() < 0.25)
        rh = voicing(pcs, 55, 76, rng)
        lh = place(pcs[0], 36)
        b0 = 4 * bar
        if style == "block":
            for p in rh + [lh]:
                w.add(p, _vel(rng, 80), b0, 3.9)
        elif style == "quarters":
            w.add(lh, _vel(rng, 80), b0, 3.9)
            for k in range(4):
                for p in rh:
                    w.add(p, _vel(rng, 85 if k % 2 == 0 else 72), b0 + k, 0.85)
        elif style == "arpeggio":
            w.add(lh, _vel(rng, 78), b0, 3.9)
            seq = rh + rh[1:-1][::-1] if len(rh) > 2 else rh
            for k in range(8):
                w.add(seq[k % len(seq)], _vel(rng, 75), b0 + k / 2, 0.9)
        else:
            w.add(lh, _vel(rng, 80), b0, 1.9)
            w.add(lh + 7, _vel(rng, 70), b0 + 2, 1.9)
            for t in (0, 2):
                for p in rh:
                    w.add(p, _vel(rng, 76), b0 + t, 1.9)


def electric_guitar_part(on, harmony, variant, rng, w: _Writer) -> None:
    for bar in range(len(on)):
        if not on[bar]:
            continue
        pcs = harmony.chord(bar)
        b0 = 4 * bar
        if variant == "distorted":
            root = place(pcs[0], 40)
            chug = rng.random() < 0.6
            for k in range(8 if chug else 2):
                step = 0.5 if chug else 2.0
                for p in (root, root + 7, root + 12):
                    w.add(p, _vel(rng, 95 if k % 2 == 0 else 85), b0 + k * step, step * 0.9)
        else:
            rh = voicing(pcs, 59, 76, rng)
            if rng.random() < 0.5:                       # arpeggio in eighths
                seq = rh + [rh[1]] if len(rh) > 2 else rh
                for k in range(8):
                    w.add(seq[k % len(seq)], _vel(rng, 80), b0 + k / 2, 0.9)
            else:                                        # offbeat chops
                for k in range(4):
                    for p in rh:
                        w.add(p, _vel(rng, 85), b0 + k + 0.5, 0.4)


def acoustic_guitar_part(on, harmony, spb, rng, w: _Writer) -> None:
    pattern = ((0, "d"), (1, "d"), (1.5, "u"), (2.5, "u"), (3, "d"), (3.5, "u"))
    if rng.random() < 0.4:
        pattern = ((0, "d"), (1, "d"), (2, "d"), (2.5, "u"), (3, "d"), (3.5, "u"))
    spread = 0.012  # seconds between strings of a strum
    for bar in range(len(on)):
        if not on[bar]:
            continue
        pcs = harmony.chord(bar)
        # six strings: root in the low octave, then chord tones stacked upwards
        strings = [place(pcs[0], 40)]
        i = 1
        while len(strings) < 6:
            strings.append(place(pcs[i % len(pcs)], strings[-1] + 1))
            i += 1
        b0 = 4 * bar
        for j, (t, direction) in enumerate(pattern):
            nxt = pattern[j + 1][0] if j + 1 < len(pattern) else 4
            hold = (nxt - t) * spb
            order = strings if direction == "d" else strings[:1:-1]
            vel = 90 if direction == "d" else 70
            for k, p in enumerate(order):
                w.add(p, _vel(rng, vel, 8), b0 + t + k * spread / spb,
                      length_s=max(hold - k * spread, 0.05))


def pad_part(instrument, on, harmony, rng, w: _Writer) -> None:
    """Distractors: strings, organ, synth pad hold voicings; brass and some organ play stabs."""
    low, high = {"bowed_strings": (55, 79), "organ": (53, 74), "synth": (48, 72),
                 "brass": (55, 74)}[instrument]
    stabs = instrument == "brass" or (instrument == "organ" and rng.random() < 0.3)
    for bar in range(len(on)):
        if not on[bar]:
            continue
        rh = voicing(harmony.chord(bar), low, high, rng)
        b0 = 4 * bar
        if stabs:
            for t, d in ((0, 0.9), (1.5, 0.4), (2.5, 1.2)):
                for p in rh:
                    w.add(p, _vel(rng, 92), b0 + t, d)
        else:
            for p in rh:
                w.add(p, _vel(rng, 75), b0, 3.95)


def play_part(inst, variant, on, form, harmony, spb, duration, rng, w: _Writer) -> None:
    """The notes of one instrument in the bars where ``on`` is True."""
    if inst == "drums":
        drums_part(on, form, spb, duration, rng, w)
    elif inst == "electric_bass":
        bass_part(on, harmony, spb, rng, w)
    elif inst == "lead_vocals":
        lead_part(on, harmony, variant, spb, rng, w)
    elif inst == "piano":
        piano_part(on, harmony, rng, w)
    elif inst == "electric_guitar":
        electric_guitar_part(on, harmony, variant, rng, w)
    elif inst == "acoustic_guitar":
        acoustic_guitar_part(on, harmony, spb, rng, w)
    else:
        pad_part(inst, on, harmony, rng, w)


# -------------------------------------------------------------------------------------- song
def compose_song(seed: int, index: int, duration: float,
                 instruments: list[str] | tuple[str, ...] | None = None) -> Song:
    """The ``index``-th song of ``seed``: ``duration`` seconds; ``instruments`` fixes the line-up."""
    rng = song_rng(seed, index)
    tempo = float(round(rng.uniform(70, 170)))
    spb = 60.0 / tempo
    n_bars = max(2, int(math.ceil(duration / (4 * spb))))
    mode = "major" if rng.random() < 0.6 else "minor"
    root = int(rng.integers(12))
    form = make_form(n_bars, rng)
    prog = {}
    degrees = []
    for name, length in form:
        if name not in prog:
            options = PROGRESSIONS[mode]
            prog[name] = options[int(rng.integers(len(options)))]
        degrees.extend(prog[name][k % len(prog[name])] for k in range(length))
    harmony = Harmony(root, MAJOR if mode == "major" else MINOR, degrees)

    sections, bar = [], 0
    for name, length in form:
        sections.append({"name": name, "bars": [bar, bar + length],
                         "start_s": round(min(4 * bar * spb, duration), 6),
                         "end_s": round(min(4 * (bar + length) * spb, duration), 6),
                         "progression": [int(d) for d in prog[name]]})
        bar += length
    sections = [s for s in sections if s["start_s"] < duration]

    if instruments:
        lineup = [i for i in INSTRUMENTS if i in set(instruments)]
    else:
        draws = rng.random(len(INSTRUMENTS))
        lineup = [i for i, d in zip(INSTRUMENTS, draws) if d < PRESENCE[i]]
        if len(lineup) < 3:   # a song needs a band: add the most likely missing ones
            for inst in sorted(INSTRUMENTS, key=lambda i: -PRESENCE[i]):
                if inst not in lineup and len(lineup) < 3:
                    lineup.append(inst)
            lineup = [i for i in INSTRUMENTS if i in lineup]

    adjective = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
    noun = NOUNS[int(rng.integers(len(NOUNS)))]
    song = Song(seed=int(seed), index=int(index), artist="iass synth",
                title=f"{adjective} {noun} {seed}-{index:03d}", tempo=tempo,
                key=f"{KEY_NAMES[root]} {mode}", mode=mode, duration=float(duration),
                sections=sections)

    # bars that lie (partly) inside the song; the arrangement only counts those
    played_bars = int(math.ceil(duration / (4 * spb) - 1e-9))
    form_in = []
    left = played_bars
    for name, length in form:
        if left <= 0:
            break
        form_in.append((name, min(length, left)))
        left -= length

    for inst in lineup:
        # each part draws from its own child stream, so removing one instrument from the
        # line-up (--instruments) leaves the others' parts unchanged
        prng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([int(seed), int(index), INSTRUMENTS.index(inst) + 1])))
        target = float(prng.uniform(0.35, 0.9) if inst == "lead_vocals" else prng.uniform(0.3, 0.95))
        variant, program, is_drum = "", 0, inst == "drums"
        if inst == "lead_vocals":
            variant = "male" if prng.random() < 0.5 else "female"
        elif inst == "electric_guitar":
            variant = "distorted" if prng.random() < 0.5 else "clean"
        if inst == "electric_guitar":
            program = int(prng.choice(DISTORTED_GUITAR if variant == "distorted" else CLEAN_GUITAR))
        elif inst != "drums":
            program = int(prng.choice(PROGRAMS[inst]))
        n_full = int(duration // (4 * spb))
        for _ in range(6):
            on = arrange(inst, form_in, prng, target, n_full)
            w = _Writer(spb, duration)
            play_part(inst, variant, on, form_in, harmony, spb, duration, prng, w)
            covered = union_length([(n.onset, n.offset) for n in w.notes]) / duration
            # sparse patterns (stabs, chops) cover less than the bars they play in: ask for more
            # bars until the notes themselves sound in about 30 % of the song or more
            if covered >= 0.28 or target >= 0.95:
                break
            target = min(0.95, target * 0.3 / max(covered, 0.05) + 0.05)
        if not w.notes:
            continue
        lo, hi = PAN[inst]
        pan = float(prng.uniform(lo, hi)) * (1 if prng.random() < 0.5 else -1)
        level = LEVEL_DB[inst] + float(prng.uniform(-3, 3))
        notes = sorted(w.notes, key=lambda n: (n.onset, n.pitch, n.offset))
        song.parts.append(Part(inst, program, is_drum, variant, notes, round(level, 3),
                               round(pan, 3)))
    # guitars sit on opposite sides when both play
    if "electric_guitar" in song.instruments and "acoustic_guitar" in song.instruments:
        e, a = song.part("electric_guitar"), song.part("acoustic_guitar")
        if e.pan * a.pan > 0:
            a.pan = -a.pan
    return song
