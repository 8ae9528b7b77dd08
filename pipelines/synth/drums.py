"""The drum part: a kit groove on GM channel 10 with fills and crashes at section starts.

Drum hits are one-shots (the soundfont ignores their note-off), so a hit's length is chosen: how
long its sample stays within ~40 dB of its peak, a new hi-hat stroke choking the previous one,
and at least up to the kit's next hit when that comes within ``DRUM_BRIDGE_S`` (a groove is one
sounding kit; its activity does not flicker between eighth notes).
"""
from __future__ import annotations

import bisect

from iass.pipelines.synth.song import NoteWriter, velocity

# GM percussion keys. A drum hit ignores its note-off (a one-shot), so a hit's note length is how
# long the TimGM6mb sample stays within ~40 dB of its peak (measured): that is its label.
# Cymbals ring for seconds; they are held (then gated) for at most 1.6 s.
KICK, SNARE, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 42, 44, 46, 49, 51
TOMS = (50, 47, 45, 43)
DRUM_RING_S = {KICK: 0.1, SNARE: 0.2, CLOSED_HAT: 0.08, PEDAL_HAT: 0.08, OPEN_HAT: 0.6,
               CRASH: 1.6, RIDE: 0.8, 50: 0.6, 47: 0.6, 45: 0.6, 43: 0.6}
DRUM_BRIDGE_S = 0.5


def drums_part(on, form, spb, duration, rng, w: NoteWriter) -> None:
    """The kit in the bars where ``on`` is True: a groove per song style, a crash where the kit
    enters or a section starts, a fill before a section change; then the hits' lengths."""
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
            hit(CRASH, b0, velocity(rng, 105))
        groove_beats = 2.0 if fill else 4.0
        ride = style == "halftime" and rng.random() < 0.3
        for k in range(int(groove_beats * 2)):          # eighths
            t = k / 2
            hat = RIDE if ride else CLOSED_HAT
            if style == "sixteenth":
                hit(hat, b0 + t, velocity(rng, 80 if k % 2 == 0 else 60))
                hit(hat, b0 + t + 0.25, velocity(rng, 55))
            else:
                hit(hat, b0 + t, velocity(rng, 85 if k % 2 == 0 else 65))
            if style == "four" and k % 2 == 0:
                hit(KICK, b0 + t, velocity(rng, 105))
                if k in (2, 6):
                    hit(SNARE, b0 + t, velocity(rng, 100))
                if k % 2 == 0 and rng.random() < 0.5:
                    hit(OPEN_HAT, b0 + t + 0.5, velocity(rng, 70))
            elif style == "halftime":
                if k == 0 or (k == 5 and rng.random() < 0.5):
                    hit(KICK, b0 + t, velocity(rng, 105))
                if k == 4:
                    hit(SNARE, b0 + t, velocity(rng, 105))
            else:
                if k in (0, 4) or (k == 5 and rng.random() < 0.4) or (k == 3 and rng.random() < 0.2):
                    hit(KICK, b0 + t, velocity(rng, 105))
                if k in (2, 6):
                    hit(SNARE, b0 + t, velocity(rng, 100))
        if fill:                                            # beats 3-4: snare/tom sixteenths
            toms = list(TOMS)
            for k in range(8):
                t = 2 + k / 4
                key = SNARE if k < 3 else toms[min((k - 3) // 2, 3)]
                if k in (0, 2, 4, 5, 6, 7) or rng.random() < 0.5:
                    hit(key, b0 + t, velocity(rng, 80 + 3 * k))
            hit(KICK, b0 + 2, velocity(rng, 100))
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
