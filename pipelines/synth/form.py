"""The song form and its harmony: sections, who plays in which bars, chords and voicings.

Two arrangements (``ARRANGEMENTS``), chosen per run:

``real`` (shaped like real multitracks)
    The form of a full-length song with the section lengths of real pop songs (verses and
    choruses of 8 or 16 bars, intros and outros of 2-8, a break of 4-8 after the second chorus;
    more verse/chorus pairs when the song is longer), and the song is a window of it that starts
    at a section boundary (:func:`make_form_real`). Who plays is drawn once per section
    (:data:`PLAYS_IN_REAL`: the band plays through verses and choruses, drops out in intros,
    breaks and outros); now and then an instrument enters halfway through a section. No
    instrument is forced to rest, so an instrument that enters usually stays: entrances and exits
    are as rare as in MedleyDB's annotations (``iass synth-stats``, docs/results.md).
``sparse`` (the original generator; more entrances and exits for the activity head to learn)
    A form of 3-7 sections scaled to the requested duration (:func:`make_form`); per section who
    plays (:data:`PLAYS_IN`), then bars are switched on or off at the edges of the played stretches
    until the instrument's share of the song is near a per-song target, and every instrument
    rests in at least one complete bar (:func:`arrange`).

Each section has a chord progression (one chord per bar).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ARRANGEMENTS = ("real", "sparse")
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

#: ``real`` arrangement: chance that an instrument plays in a section of each kind. The band
#: plays through most verses and choruses; intros, breaks and outros thin it out. Tuned so that
#: in songs of 180 s a target is active about as much of the time as in MedleyDB's annotations
#: (vocals ~70 %, the others ~80-85 %; ``iass synth-stats``, docs/results.md).
PLAYS_IN_REAL = {
    #                  intro verse chorus break outro
    "lead_vocals":     (0.05, 0.80, 0.90, 0.15, 0.30),
    "drums":           (0.40, 0.85, 0.95, 0.50, 0.60),
    "electric_bass":   (0.40, 0.87, 0.95, 0.60, 0.60),
    "electric_guitar": (0.50, 0.80, 0.92, 0.70, 0.60),
    "acoustic_guitar": (0.70, 0.88, 0.90, 0.70, 0.70),
    "piano":           (0.60, 0.82, 0.88, 0.70, 0.70),
    "bowed_strings":   (0.40, 0.50, 0.80, 0.60, 0.60),
    "organ":           (0.40, 0.70, 0.80, 0.60, 0.60),
    "synth":           (0.50, 0.60, 0.80, 0.60, 0.60),
    "brass":           (0.20, 0.40, 0.80, 0.40, 0.50),
}
#: ``real`` arrangement: section lengths in bars (a draw per section) and the chance that a
#: playing instrument enters halfway through a section of 8 bars or more
REAL_SECTION_BARS = {"intro": (2, 4, 4, 8), "verse": (8, 8, 16), "chorus": (8, 8, 16),
                     "break": (4, 8, 8), "outro": (2, 4, 8)}
LATE_ENTRY = 0.1

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# progressions as 0-based scale degrees, one chord per bar
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4),
              (3, 0, 4, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (5, 6, 0, 0)),
}
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


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


def make_form_real(n_bars: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """``real`` arrangement: a window of ``n_bars`` bars of a full-length song's form.

    The full form is intro, verse, chorus, verse, chorus, break, chorus, outro (the intro and the
    break sometimes left out), with more verse/chorus pairs before the last chorus while it is
    shorter than the song; the window starts at the first section (a song's beginning) with
    chance 0.3, else at a section drawn among those that leave ``n_bars`` bars before the end.
    Lengths sum to ``n_bars`` (the last section is cut)."""
    names = (["intro"] if rng.random() < 0.85 else []) + ["verse", "chorus", "verse", "chorus"]
    names += (["break"] if rng.random() < 0.7 else []) + ["chorus", "outro"]
    form = [(name, int(rng.choice(REAL_SECTION_BARS[name]))) for name in names]
    while sum(length for _, length in form) < n_bars:
        at = len(form) - 2   # before the last chorus and the outro
        form[at:at] = [(name, int(rng.choice(REAL_SECTION_BARS[name]))) for name in ("verse", "chorus")]
    ends = np.cumsum([length for _, length in form])
    starts = ends - [length for _, length in form]
    fits = [i for i, s0 in enumerate(starts) if ends[-1] - s0 >= n_bars]
    first = 0 if rng.random() < 0.3 else int(fits[int(rng.integers(len(fits)))])
    out, left = [], n_bars
    for name, length in form[first:]:
        if left <= 0:
            break
        out.append((name, min(length, left)))
        left -= length
    return out


def arrange_real(instrument: str, form: list[tuple[str, int]], rng: np.random.Generator) -> np.ndarray:
    """``real`` arrangement: boolean per bar, one draw per section (:data:`PLAYS_IN_REAL`).

    An instrument that enters (it rested in the section before) enters halfway through a long
    section with chance ``LATE_ENTRY``; an instrument that would play nowhere plays the section
    it is likeliest to play in."""
    probs = PLAYS_IN_REAL[instrument]
    bars: list[bool] = []
    for name, length in form:
        plays = bool(rng.random() < probs[SECTION_NAMES.index(name)])
        late = 0
        if plays and length >= 8 and rng.random() < LATE_ENTRY and not (bars and bars[-1]):
            late = length // 2
        bars.extend([False] * late + [plays] * (length - late))
    on = np.array(bars, dtype=bool)
    if not on.any():
        best = max(range(len(form)), key=lambda k: (probs[SECTION_NAMES.index(form[k][0])], -k))
        first = sum(length for _, length in form[:best])
        on[first: first + form[best][1]] = True
    return on


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
