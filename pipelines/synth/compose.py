"""Procedural songs: a song form, harmony and one MIDI part per instrument, from a seed.

A song is a 4/4 piece in one key and mode at a tempo of 70..170 BPM. Its form is a sequence of
sections (intro, verse, chorus, break, outro); each section has a chord progression (one chord per
bar). Who plays where is the *arrangement* (:mod:`iass.pipelines.synth.form`), one of two:

* ``real``: shaped like real multitracks. The song is a window of a full-length form with real
  section lengths (verses and choruses of 8-16 bars); who plays is drawn per section (the band
  plays through verses and choruses), so an instrument that enters usually stays, and the lead
  sings lines of 2-4 bars. Measured against MedleyDB's activation annotations by
  ``iass synth-stats`` (docs/results.md).
* ``sparse`` (the default of :func:`compose_song`, the original generator): a 3-7 section form
  scaled to the duration; bars are switched on or off until the instrument's share of the song
  is near a per-song target drawn between 30 % and 95 % (sparse patterns such as stabs get more
  bars, so their notes still sound in about 30 % of the song or more), and every instrument
  rests in at least one complete bar. Many more entrances and exits than real songs have: more
  for an activity head to learn from.

A song's tempo, key, line-up and title (so its ids and MUSDB split) are the same in both
arrangements: the ``real`` form is drawn from its own child stream.

Note times are the labels. Drum hits are one-shots (the soundfont ignores their note-off), so a
hit's length is chosen: how long its sample stays within ~40 dB of its peak, a new hi-hat stroke
choking the previous one, and at least up to the kit's next hit when that comes within 0.5 s
(a groove is one sounding kit; its activity does not flicker between eighth notes).

The pieces live in their own modules, re-exported here (``from iass.pipelines.synth.compose
import INSTRUMENTS, compose_song, Song ...`` keeps working):

* :mod:`iass.pipelines.synth.song`: the instruments (names, programs, presence, level and pan),
  ``Note``, ``Part``, ``Song``, the note writer and the seeded random streams;
* :mod:`iass.pipelines.synth.form`: sections, the per-bar arrangement, harmony and voicings;
* :mod:`iass.pipelines.synth.drums`: the drum kit part and its hit lengths;
* :mod:`iass.pipelines.synth.parts`: bass, lead, piano, guitars and the distractor parts;
* this module: the song itself (:func:`compose_song`): tempo, key, form, line-up, title and the
  parts, each from its own child stream.

Everything is drawn from ``numpy.random.Generator(PCG64(SeedSequence([seed, index])))``, whose
streams are specified bit for bit, so a song is the same on every machine. Note times are exact
(seconds, float64); they are the activity labels of the rendered stems.
"""
from __future__ import annotations

import math

import numpy as np

from iass.errors import ConfigError
from iass.pipelines.synth.drums import (  # noqa: F401  (re-exported)
    CLOSED_HAT, CRASH, DRUM_BRIDGE_S, DRUM_RING_S, KICK, OPEN_HAT, PEDAL_HAT, RIDE, SNARE, TOMS,
    drums_part,
)
from iass.pipelines.synth.form import (  # noqa: F401  (re-exported)
    ARRANGEMENTS, KEY_NAMES, MAJOR, MINOR, PLAYS_IN, PLAYS_IN_REAL, PROGRESSIONS, SECTION_NAMES,
    Harmony, arrange, arrange_real, make_form, make_form_real, place, voicing,
)
from iass.pipelines.synth.parts import (  # noqa: F401  (re-exported)
    acoustic_guitar_part, bass_part, electric_guitar_part, lead_part, pad_part, piano_part,
    play_part,
)
from iass.pipelines.synth.song import (  # noqa: F401  (re-exported)
    CLEAN_GUITAR, DISTORTED_GUITAR, DISTRACTORS, INSTRUMENTS, LEVEL_DB, PAN, PRESENCE, PROGRAMS,
    Note, NoteWriter, Part, Song, song_rng, union_length, velocity,
)

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


def progressions(form: list[tuple[str, int]], mode: str, rng: np.random.Generator):
    """A chord progression per section name, and the chord degree of every bar."""
    prog: dict[str, tuple[int, ...]] = {}
    degrees: list[int] = []
    for name, length in form:
        if name not in prog:
            options = PROGRESSIONS[mode]
            prog[name] = options[int(rng.integers(len(options)))]
        degrees.extend(prog[name][k % len(prog[name])] for k in range(length))
    return prog, degrees


def compose_song(seed: int, index: int, duration: float,
                 instruments: list[str] | tuple[str, ...] | None = None,
                 arrangement: str = "sparse") -> Song:
    """The ``index``-th song of ``seed``: ``duration`` seconds; ``instruments`` fixes the line-up;
    ``arrangement`` is ``real`` (entrances and exits as in real multitracks) or ``sparse`` (the
    original generator: every instrument enters and drops out; the default, so existing seeds
    keep their songs)."""
    if arrangement not in ARRANGEMENTS:
        raise ConfigError(f"unknown arrangement {arrangement!r}; choose one of {', '.join(ARRANGEMENTS)}")
    real = arrangement == "real"
    rng = song_rng(seed, index)
    tempo = float(round(rng.uniform(70, 170)))
    spb = 60.0 / tempo
    n_bars = max(2, int(math.ceil(duration / (4 * spb))))
    mode = "major" if rng.random() < 0.6 else "minor"
    root = int(rng.integers(12))
    form = make_form(n_bars, rng)
    prog, degrees = progressions(form, mode, rng)
    if real:
        # the sparse form's draws above are made either way, so a song's tempo, key, line-up,
        # title (and so its ids and MUSDB split) do not depend on the arrangement; the real
        # form and its chords come from their own child stream
        frng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), 0])))
        form = make_form_real(n_bars, frng)
        prog, degrees = progressions(form, mode, frng)
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
        if real:
            on = arrange_real(inst, form_in, prng)
            w = NoteWriter(spb, duration)
            play_part(inst, variant, on, form_in, harmony, spb, duration, prng, w, real=True)
        for _ in range(0 if real else 6):
            on = arrange(inst, form_in, prng, target, n_full)
            w = NoteWriter(spb, duration)
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
