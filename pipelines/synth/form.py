"""The song form and its harmony: sections, who plays in which bars, chords and voicings.

A song's form is a sequence of sections (intro, verse, chorus, break, verse, chorus, outro, scaled
to the requested duration); each section has a chord progression (one chord per bar). Every
instrument plays only in some bars: an arrangement decides per section who plays (drums rest in
the break, the lead rests in the intro ...), then bars are switched on or off at the edges of the
played stretches until the instrument's share of the song is near a per-song target, and every
instrument rests in at least one complete bar.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
