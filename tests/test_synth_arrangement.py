"""The synthesizer's two arrangements: ``real`` (shaped like real multitracks) and ``sparse``.

Composition only (no rendering): a song of 20 s composes in ~10 ms, so this file takes seconds.
"""
from __future__ import annotations

import numpy as np
import pytest

from iass.errors import ConfigError
from iass.pipelines.synth.compose import INSTRUMENTS, compose_song
from iass.pipelines.synth.form import REAL_SECTION_BARS, make_form_real


def _bar_runs(song, instrument: str) -> list[int]:
    """Lengths in bars of the instrument's runs of bars with a note onset (its played stretches)."""
    spb = 60.0 / song.tempo
    n_bars = int(np.ceil(song.duration / (4 * spb) - 1e-9))
    played = np.zeros(n_bars, dtype=bool)
    for n in song.part(instrument).notes:
        # onsets are rounded to the microsecond: a downbeat may sit just below its bar line
        played[min(int(n.onset / (4 * spb) + 1e-4), n_bars - 1)] = True
    d = np.diff(np.r_[0, played.astype(int), 0])
    return list(np.flatnonzero(d == -1) - np.flatnonzero(d == 1))


def test_sparse_stays_the_default_and_unknown_arrangements_are_refused():
    a, b = compose_song(7, 3, 12.0), compose_song(7, 3, 12.0, arrangement="sparse")
    assert [p.notes for p in a.parts] == [p.notes for p in b.parts] and a.sections == b.sections
    with pytest.raises(ConfigError, match="unknown arrangement 'dense'"):
        compose_song(7, 3, 12.0, arrangement="dense")


def test_real_songs_are_seeded_and_keep_the_songs_identity():
    for i in range(8):
        real = compose_song(303, i, 20.0, arrangement="real")
        again = compose_song(303, i, 20.0, arrangement="real")
        assert [p.notes for p in real.parts] == [p.notes for p in again.parts]
        sparse = compose_song(303, i, 20.0)
        # ids and MUSDB splits come from the title: an arrangement does not rename a song
        assert (real.title, real.tempo, real.key, real.instruments) == \
            (sparse.title, sparse.tempo, sparse.key, sparse.instruments)
        assert [p.program for p in real.parts] == [p.program for p in sparse.parts]
        assert [p.notes for p in real.parts] != [p.notes for p in sparse.parts]
    # a fixed line-up: every instrument plays somewhere, each part from its own stream
    full = compose_song(9, 2, 30.0, INSTRUMENTS, arrangement="real")
    some = compose_song(9, 2, 30.0, ["drums", "piano"], arrangement="real")
    assert full.instruments == list(INSTRUMENTS) and all(p.notes for p in full.parts)
    assert some.part("piano").notes == full.part("piano").notes


def test_real_forms_have_real_section_lengths():
    rng = np.random.default_rng(0)
    for n_bars in (2, 9, 40, 120, 400):
        for _ in range(20):
            form = make_form_real(n_bars, rng)
            assert sum(length for _, length in form) == n_bars
            # every section but the window's cut-off last one has a drawn length
            for name, length in form[:-1]:
                assert length in REAL_SECTION_BARS[name], (n_bars, form)
    song = compose_song(101, 4, 240.0, arrangement="real")
    assert song.sections[0]["start_s"] == 0.0 and song.sections[-1]["end_s"] == pytest.approx(240.0)
    assert [s["name"] for s in song.sections].count("chorus") >= 3


def test_real_arrangements_enter_and_leave_less_often_than_sparse_ones():
    """Played stretches: the band plays whole sections in ``real``; ``sparse`` makes every part
    rest somewhere (at the demo's 20 s, in sections of 1-3 bars) and cuts songs into more runs."""
    runs = {("real", 20.0): [], ("sparse", 20.0): [], ("real", 120.0): [], ("sparse", 120.0): []}
    for arrangement, duration in runs:
        for i in range(24 if duration < 100 else 6):
            song = compose_song(202, i, duration, arrangement=arrangement)
            for inst in ("drums", "electric_bass", "electric_guitar", "acoustic_guitar", "piano"):
                if inst in song.instruments:
                    n_bars = int(np.ceil(duration / (4 * 60.0 / song.tempo) - 1e-9))
                    r = _bar_runs(song, inst)
                    runs[arrangement, duration].append((r, n_bars))
    whole = {k: np.mean([r == [n] for r, n in v]) for k, v in runs.items()}
    entrances = {k: np.mean([len(r) for r, _ in v]) for k, v in runs.items()}
    median_run = {k: np.median([x for r, _ in v for x in r]) for k, v in runs.items()}
    assert whole["sparse", 20.0] == 0 and whole["real", 20.0] >= 0.5, whole
    for d in (20.0, 120.0):
        assert entrances["real", d] < entrances["sparse", d], entrances
        assert median_run["real", d] >= 1.5 * median_run["sparse", d], median_run
    # and the lead sings lines: fewer rests (> 0.2 s) per minute of singing than sparse phrases
    rests = {}
    for arrangement in ("real", "sparse"):
        n_rests = sung = 0.0
        for i in range(20):
            song = compose_song(202, i, 40.0, arrangement=arrangement)
            if "lead_vocals" in song.instruments:
                iv = sorted(song.part("lead_vocals").intervals())
                n_rests += sum(b[0] - a[1] > 0.2 for a, b in zip(iv, iv[1:]))
                sung += song.part("lead_vocals").active_fraction(40.0) * 40.0
        rests[arrangement] = n_rests / sung * 60.0
    assert rests["real"] < 0.7 * rests["sparse"], rests
