"""Property tests (hypothesis) of the label derivation (pipelines/activity.py) and the taxonomy
mapping (pipelines/taxonomy.py) on arbitrary inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from iass.pipelines import activity as act
from iass.pipelines.sources.base import source_names
from iass.pipelines.taxonomy import (
    TaxonomyError,
    load_label_map,
    load_taxonomy,
    map_label,
    normalize_label,
    stem_instrument,
)

HOP, WIN = 256, 1024  # small frames keep examples fast; the formula does not depend on them
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARAMS = {"win": WIN}

finite = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@st.composite
def tracks(draw, min_instruments=1, max_instruments=4):
    """(instruments {name: (n, 2) float32}, n): tone bursts, noise, silence, clicks."""
    k = draw(st.integers(min_instruments, max_instruments))
    n = draw(st.integers(1, 12 * HOP))
    out = {}
    for i in range(k):
        kind = draw(st.sampled_from(["noise", "tone", "silence", "burst", "raw"]))
        gain = draw(st.floats(1e-3, 1.0))
        seed = draw(st.integers(0, 2**16))
        t = np.arange(n)
        # deterministic noise from the drawn seed (hypothesis owns the randomness)
        noise = lambda m: (np.sin((np.arange(m) + seed) * 12.9898) * 43758.5453) % 1.0 - 0.5  # noqa: E731
        if kind == "noise":
            x = noise(n)
        elif kind == "tone":
            x = np.sin(2 * np.pi * draw(st.floats(20, 5000)) * t / 44100)
        elif kind == "silence":
            x = np.zeros(n)
        elif kind == "burst":
            a = draw(st.integers(0, n - 1))
            b = draw(st.integers(a + 1, n))
            x = np.zeros(n)
            x[a:b] = noise(b - a)
        else:
            x = draw(arrays(np.float32, n, elements=finite)).astype(np.float64)
        audio = np.stack([x, x * draw(st.floats(0, 1))], axis=1) * gain
        out[f"inst{i}"] = audio.astype(np.float32)
    return out, n


@SETTINGS
@given(tracks())
def test_confidence_is_finite_in_0_1_and_one_value_per_frame(track):
    inst, n = track
    conf = act.confidence_from_audio(inst, HOP, PARAMS)
    assert set(conf) == set(inst)
    for c in conf.values():
        assert c.shape == (n // HOP + 1,)
        assert np.isfinite(c).all() and (c >= 0).all() and (c <= 1).all()


@SETTINGS
@given(tracks(max_instruments=3), st.integers(1, 4))
def test_a_silent_instrument_is_inactive_in_every_frame(track, n_silent):
    inst, n = track
    for j in range(n_silent):
        inst[f"silent{j}"] = np.zeros((n, 2), np.float32)
    conf = act.confidence_from_audio(inst, HOP, PARAMS)
    for j in range(n_silent):
        assert not act.binarize(conf[f"silent{j}"]).any()
    # and silence everywhere: every instrument inactive everywhere
    quiet = act.confidence_from_audio({k: np.zeros_like(v) for k, v in inst.items()}, HOP, PARAMS)
    assert not any(act.binarize(c).any() for c in quiet.values())


@SETTINGS
@given(tracks(), st.floats(1e-3, 1e3))
def test_scaling_every_stem_by_one_constant_leaves_the_labels_unchanged(track, scale):
    """H is normalised across all stems of the track, so a common gain cancels (the envelope is
    sqrt(|x|): it scales by sqrt(gain) in every stem alike). The absolute energy floor is the one
    place a gain enters, so it is 0 here; see the next test for the floor."""
    inst, _ = track
    p = {**PARAMS, "energy_floor": 0.0}
    a = act.confidence_from_audio(inst, HOP, p)
    b = act.confidence_from_audio({k: v.astype(np.float64) * scale for k, v in inst.items()}, HOP, p)
    for k in inst:
        np.testing.assert_allclose(a[k], b[k], atol=2e-5)
        sure = np.abs(a[k] - 0.5) > 1e-4  # a label may only flip exactly at the threshold
        np.testing.assert_array_equal(act.binarize(a[k])[sure], act.binarize(b[k])[sure])


@SETTINGS
@given(tracks(), st.floats(1.0, 1e3))
def test_louder_stems_never_lose_frames_to_the_energy_floor(track, scale):
    """With the default floor, a gain > 1 can only lift frames above it: labels unchanged where
    the quieter version was already above the floor everywhere."""
    inst, n = track
    w = act.hanning(WIN)
    env = np.stack([act.frame_envelope(act.to_mono(v), HOP, WIN, w, n // HOP + 1) for v in inst.values()])
    assume(env.sum(axis=0).min() >= 0.01 * 1.001)  # no frame near the floor
    a = act.confidence_from_audio(inst, HOP, PARAMS)
    b = act.confidence_from_audio({k: v.astype(np.float64) * scale for k, v in inst.items()}, HOP, PARAMS)
    for k in inst:
        np.testing.assert_allclose(a[k], b[k], atol=2e-5)


@st.composite
def notes(draw):
    n_frames = draw(st.integers(1, 40))
    dur = n_frames * HOP / 44100
    k = draw(st.integers(0, 6))
    ivs = []
    for _ in range(k):
        on = draw(st.floats(-0.01, dur, allow_nan=False))
        length = draw(st.one_of(st.floats(1e-5, 1e-3), st.floats(1e-3, dur + 0.01)))
        ivs.append((on, on + length))
    return ivs, n_frames


@SETTINGS
@given(notes())
def test_exact_labels_cover_every_note_and_nothing_else(case):
    """Frame t is active iff a note overlaps its cell [t*hop - hop/2, t*hop + hop/2): checked
    against a brute-force reference; so every note inside the track marks >= 1 frame."""
    ivs, T = case
    got = act.intervals_to_frames(ivs, T, HOP, 44100)
    want = np.zeros(T, bool)
    for t in range(T):
        lo, hi = t * HOP - HOP / 2, t * HOP + HOP / 2
        want[t] = any(max(a * 44100, lo) < min(b * 44100, hi) for a, b in ivs)
    np.testing.assert_array_equal(got, want)
    for a, b in ivs:  # every note that sounds inside the frames' span is covered
        if b * 44100 > -HOP / 2 and a * 44100 < (T - 0.5) * HOP:
            centre = int(np.clip(np.floor((a * 44100 + HOP / 2) / HOP), 0, T - 1))
            assert got[max(0, centre - 1): centre + 2].any()


# ----------------------------------------------------------------------------- the taxonomy
labels = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(labels)
def test_normalisation_is_idempotent(label):
    once = normalize_label(label)
    assert normalize_label(once) == once
    assert once == once.strip() and "  " not in once


@pytest.mark.parametrize("source", source_names())
@settings(max_examples=150, deadline=None)
@given(label=labels)
def test_an_unknown_label_is_never_dropped_silently(source, label):
    lm = load_label_map(source)
    tax = load_taxonomy()
    key = normalize_label(label)
    if key in lm.labels:
        assert map_label(source, label) in tax  # known: a canonical instrument, nothing else
        return
    with pytest.raises(TaxonomyError) as err:
        map_label(source, label, track="T1")
    msg = str(err.value)
    assert repr(str(label)) in msg and "(track T1)" in msg and str(lm.path) in msg
    # inside a list of otherwise good labels too: one bad label fails the stem
    good = next(iter(lm.labels))
    with pytest.raises(TaxonomyError, match="unmapped"):
        stem_instrument(source, [good, label], track="T1")


@pytest.mark.parametrize("source", source_names())
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_known_labels_map_whatever_their_case_and_spacing(source, data):
    lm = load_label_map(source)
    key = data.draw(st.sampled_from(sorted(lm.labels)))
    assume(key.isascii())
    words = key.split(" ")
    pads = data.draw(st.lists(st.sampled_from([" ", "  ", "\t", " \n "]), min_size=len(words) + 1,
                              max_size=len(words) + 1))
    flips = data.draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
    spelled = pads[0] + "".join(w + p for w, p in zip(words, pads[1:]))
    spelled = "".join(c.upper() if f and i < len(flips) else c for i, (c, f) in
                      enumerate(zip(spelled, flips + [False] * len(spelled))))
    assert map_label(source, spelled) == lm.labels[key]
