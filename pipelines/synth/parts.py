"""The pitched parts: bass, lead melody, piano, guitars and the distractors (pads and stabs).

Each ``*_part`` function writes one instrument's notes in the bars where ``on`` is True;
:func:`play_part` dispatches on the instrument (the drums are in
:mod:`iass.pipelines.synth.drums`).
"""
from __future__ import annotations

import numpy as np

from iass.pipelines.synth.drums import drums_part
from iass.pipelines.synth.form import place, voicing
from iass.pipelines.synth.song import NoteWriter, velocity


def bass_part(on, harmony, spb, rng, w: NoteWriter) -> None:
    style = rng.choice(["whole", "eighths", "root_fifth", "syncopated"])
    for bar in range(len(on)):
        if not on[bar]:
            continue
        root = place(harmony.chord(bar)[0], 28)
        fifth = root + 7
        b0 = 4 * bar
        if style == "whole":
            w.add(root, velocity(rng, 95), b0, 3.8)
        elif style == "eighths":
            for k in range(8):
                w.add(root, velocity(rng, 92 if k % 2 == 0 else 80), b0 + k / 2, 0.45)
        elif style == "root_fifth":
            for k, p in enumerate((root, fifth, root + 12, fifth)):
                w.add(p, velocity(rng, 92), b0 + k, 0.9)
        else:
            for t, p, d in ((0, root, 1.4), (1.5, root, 0.45), (2, fifth, 0.9), (3.5, root, 0.45)):
                w.add(p, velocity(rng, 92), b0 + t, d)
        nxt = bar + 1
        if nxt < len(on) and on[nxt] and style != "whole" and rng.random() < 0.3:
            target = place(harmony.chord(nxt)[0], 28)
            w.notes = [n for n in w.notes if n.onset < (b0 + 3.5) * spb - 1e-6]
            step = 1 if (rng.random() < 0.5 or target <= 28) else -1   # nothing below low E
            w.add(target + step, velocity(rng, 85), b0 + 3.5, 0.45)


def lead_part(on, harmony, register, spb, rng, w: NoteWriter, lines: bool = False) -> None:
    """Phrases of 1-2 bars with rests of 0.5-1.5 beats; ``lines`` (the ``real`` arrangement):
    sung lines of 2 bars (or 1, 4 when the bars allow) ending in a breath of 0.5-1 beat."""
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
        if lines:
            # a sung line: up to 2 or 4 played bars, a pickup now and then, a breath at its end
            length = 1
            while length < (4 if rng.random() < 0.3 else 2) and bar + length < len(on) and on[bar + length]:
                length += 1
            beat = 4 * bar + (0.5 if rng.random() < 0.15 else 0.0)
            end = 4 * (bar + length) - float(rng.choice([0.5, 1.0]))
        else:
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
                w.add(pitches[idx], velocity(rng, 95, 12), beat, d * (0.98 if lines else 0.92))
                beat += d
        bar += length


def piano_part(on, harmony, rng, w: NoteWriter) -> None:
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
                w.add(p, velocity(rng, 80), b0, 3.9)
        elif style == "quarters":
            w.add(lh, velocity(rng, 80), b0, 3.9)
            for k in range(4):
                for p in rh:
                    w.add(p, velocity(rng, 85 if k % 2 == 0 else 72), b0 + k, 0.85)
        elif style == "arpeggio":
            w.add(lh, velocity(rng, 78), b0, 3.9)
            seq = rh + rh[1:-1][::-1] if len(rh) > 2 else rh
            for k in range(8):
                w.add(seq[k % len(seq)], velocity(rng, 75), b0 + k / 2, 0.9)
        else:
            w.add(lh, velocity(rng, 80), b0, 1.9)
            w.add(lh + 7, velocity(rng, 70), b0 + 2, 1.9)
            for t in (0, 2):
                for p in rh:
                    w.add(p, velocity(rng, 76), b0 + t, 1.9)


def electric_guitar_part(on, harmony, variant, rng, w: NoteWriter) -> None:
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
                    w.add(p, velocity(rng, 95 if k % 2 == 0 else 85), b0 + k * step, step * 0.9)
        else:
            rh = voicing(pcs, 59, 76, rng)
            if rng.random() < 0.5:                       # arpeggio in eighths
                seq = rh + [rh[1]] if len(rh) > 2 else rh
                for k in range(8):
                    w.add(seq[k % len(seq)], velocity(rng, 80), b0 + k / 2, 0.9)
            else:                                        # offbeat chops
                for k in range(4):
                    for p in rh:
                        w.add(p, velocity(rng, 85), b0 + k + 0.5, 0.4)


def acoustic_guitar_part(on, harmony, spb, rng, w: NoteWriter) -> None:
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
                w.add(p, velocity(rng, vel, 8), b0 + t + k * spread / spb,
                      length_s=max(hold - k * spread, 0.05))


def pad_part(instrument, on, harmony, rng, w: NoteWriter) -> None:
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
                    w.add(p, velocity(rng, 92), b0 + t, d)
        else:
            for p in rh:
                w.add(p, velocity(rng, 75), b0, 3.95)


def play_part(inst, variant, on, form, harmony, spb, duration, rng, w: NoteWriter,
              real: bool = False) -> None:
    """The notes of one instrument in the bars where ``on`` is True; ``real``: the ``real``
    arrangement (the lead sings longer lines)."""
    if inst == "drums":
        drums_part(on, form, spb, duration, rng, w)
    elif inst == "electric_bass":
        bass_part(on, harmony, spb, rng, w)
    elif inst == "lead_vocals":
        lead_part(on, harmony, variant, spb, rng, w, lines=real)
    elif inst == "piano":
        piano_part(on, harmony, rng, w)
    elif inst == "electric_guitar":
        electric_guitar_part(on, harmony, variant, rng, w)
    elif inst == "acoustic_guitar":
        acoustic_guitar_part(on, harmony, spb, rng, w)
    else:
        pad_part(inst, on, harmony, rng, w)
