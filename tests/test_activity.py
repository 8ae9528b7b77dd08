"""Activity labels against an independent, loop-by-loop reading of the published formula."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from iass.pipelines import activity as act
from iass.pipelines.corpus_format import num_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SR = 44100


def reference_medleydb_energy(wave: np.ndarray, win_len: int = 4096) -> np.ndarray:
    """marl/medleydb track_energy, re-typed without librosa: hop = win/2, pad win-hop in front."""
    hop = win_len // 2
    w = scipy.signal.windows.hann(win_len + 2)[1:-1]
    wave = np.concatenate([np.zeros(win_len - hop), wave])
    total = int(win_len * math.ceil(len(wave) / win_len))
    wave = np.concatenate([wave, np.zeros(total - len(wave))])
    out = []
    for start in range(0, len(wave) - win_len + 1, hop):
        frame = wave[start:start + win_len]
        out.append(np.mean(np.sqrt((frame + np.abs(frame)) / 2) * w))
    return np.array(out)


def reference_centered_energy(wave: np.ndarray, hop: int, win: int = 4096) -> np.ndarray:
    """Frame t covers samples [t*hop - win/2, t*hop + win/2), zeros outside; n//hop + 1 frames."""
    w = scipy.signal.windows.hann(win + 2)[1:-1]
    T = len(wave) // hop + 1
    out = np.zeros(T)
    for t in range(T):
        lo = t * hop - win // 2
        frame = np.zeros(win)
        for k in range(win):
            i = lo + k
            if 0 <= i < len(wave):
                frame[k] = wave[i]
        out[t] = np.mean(np.sqrt(np.maximum(frame, 0)) * w)
    return out


def reference_confidence(H: np.ndarray, floor=0.01, cutoff=0.075, slope=20.0, theta=0.15):
    """The published steps, written out: normalise by n * / max of the sum, floor, filtfilt, logistic."""
    H = np.array(H, dtype=float)
    n = H.shape[0]
    E0 = H.sum(axis=0)
    H = n * H / E0.max()
    for t in range(H.shape[1]):
        if E0[t] < floor:
            H[:, t] = 0.0
    b, a = scipy.signal.butter(2, cutoff, "low")
    H = scipy.signal.filtfilt(b, a, H, axis=1)
    return 1.0 - 1.0 / (1.0 + np.exp(slope * (H - theta)))


def tone(n, on, freq, amp=0.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = amp * (np.sin(2 * np.pi * freq * t) + 0.03 * rng.standard_normal(n))
    g = np.zeros(n)
    for a, b in on:
        g[int(a * SR):int(b * SR)] = 1
    return x * g


def test_hop_2048_reproduces_medleydb_frames():
    x = tone(3 * SR + 123, [(0.3, 2.0)], 440.0)
    ref = reference_medleydb_energy(x)
    ours = act.frame_envelope(x, hop=2048)
    n = min(len(ref), len(ours))
    assert n >= len(ours) - 1
    np.testing.assert_allclose(ours[:n], ref[:n], rtol=1e-12, atol=1e-15)


def test_envelope_at_model_hop_matches_centered_definition():
    x = tone(20000, [(0.05, 0.3)], 300.0, seed=3)
    np.testing.assert_allclose(act.frame_envelope(x, hop=1024), reference_centered_energy(x, 1024),
                               rtol=1e-12, atol=1e-15)
    assert len(act.frame_envelope(x, hop=1024)) == num_frames(len(x), 1024)


def test_envelope_of_multichannel_audio_is_that_of_its_mono_mix():
    """frame_envelope mixes (n, channels) audio down block by block: the same bits as
    to_mono first (odd lengths, frames past the end, 1-3 channels, short signals)."""
    rng = np.random.default_rng(5)
    for n, hop, win, frames in [(3 * SR + 333, 1024, 4096, None), (2 * SR, 512, 4096, 2 * SR // 512 + 9),
                                (3000, 1024, 4096, None), (100, 256, 1024, None)]:
        for ch in (1, 2, 3):
            x = (0.3 * rng.standard_normal((n, ch))).astype(np.float32)
            ref = reference_centered_energy(act.to_mono(x), hop, win) if frames is None else None
            got = act.frame_envelope(x, hop, win, n_frames=frames)
            assert np.array_equal(got, act.frame_envelope(act.to_mono(x), hop, win, n_frames=frames))
            if ref is not None:
                np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)


def test_confidence_matches_published_formula_and_binarises():
    n = 4 * SR
    stems = {
        "vocals": np.stack([tone(n, [(0.5, 2.0)], 440.0, seed=1)] * 2, axis=1),
        "drums": np.stack([tone(n, [(0.0, 4.0)], 110.0, seed=2)] * 2, axis=1),
        "piano": np.stack([tone(n, [(2.5, 3.5)], 262.0, seed=3)] * 2, axis=1),
    }
    conf = act.confidence_from_audio(stems, hop=1024)
    H = np.stack([reference_centered_energy(s.mean(axis=1), 1024) for s in stems.values()])
    ref = reference_confidence(H)
    for i, name in enumerate(stems):
        np.testing.assert_allclose(conf[name], ref[i], atol=1e-6)
    frame_t = np.arange(len(conf["vocals"])) * 1024 / SR
    on = act.binarize(conf["vocals"])
    # well inside the burst: active; well outside: inactive
    assert on[(frame_t > 0.8) & (frame_t < 1.7)].all()
    assert not on[(frame_t > 2.6) & (frame_t < 3.9)].any()
    assert act.binarize(conf["drums"])[(frame_t > 0.2) & (frame_t < 3.8)].all()


def test_quiet_stem_is_inactive_because_normalised_across_all_stems():
    n = 2 * SR
    loud = np.stack([tone(n, [(0, 2)], 200.0, amp=0.5)] * 2, axis=1)
    quiet = np.stack([tone(n, [(0, 2)], 300.0, amp=0.0005, seed=1)] * 2, axis=1)
    conf = act.confidence_from_audio({"a": loud, "b": quiet}, hop=1024)
    assert conf["a"][5:-5].min() > 0.9
    assert conf["b"].max() < 0.5
    # alone, the same quiet stem is normalised by itself: confident wherever E0 passes the floor
    alone = act.confidence_from_audio({"b": quiet * 100}, hop=1024)
    assert alone["b"][5:-5].min() > 0.5


def test_label_params_change_labels():
    n = 2 * SR
    x = np.stack([tone(n, [(0.5, 1.5)], 200.0)] * 2, axis=1)
    y = np.stack([tone(n, [(0, 2)], 300.0, amp=0.1, seed=2)] * 2, axis=1)
    a = act.confidence_from_audio({"x": x, "y": y}, 1024)
    b = act.confidence_from_audio({"x": x, "y": y}, 1024, {"logistic_center": 0.5})
    assert not np.allclose(a["y"], b["y"])


def test_intervals_to_frames_matches_brute_force():
    hop, T = 1024, 60
    rng = np.random.default_rng(0)
    for _ in range(200):
        on = rng.uniform(0, 1.3)
        off = on + rng.choice([rng.uniform(0.0001, 0.03), rng.uniform(0.03, 0.5)])
        got = act.intervals_to_frames([(on, off)], T, hop, SR)
        cells = [(t * hop - hop / 2, t * hop + hop / 2) for t in range(T)]
        want = np.array([max(on * SR, lo) < min(off * SR, hi) for lo, hi in cells])
        np.testing.assert_array_equal(got, want)
    # a note shorter than a hop still marks its frame
    assert act.intervals_to_frames([(1.0, 1.001)], T, hop, SR).sum() == 1


def test_note_label_readers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instrument": ["piano", "piano", "drums"], "onset_s": [0.0, 1.0, 0.5],
                             "offset_s": [0.5, 1.5, 0.7]}), tmp_path / "notes.parquet")
    (tmp_path / "n.csv").write_text("stem,start,end\npiano,0.0,0.5\n")
    (tmp_path / "n.json").write_text('{"stems": {"piano": [[0.0, 0.5]]}}')
    assert act.read_note_labels(tmp_path / "notes.parquet") == {
        "piano": [(0.0, 0.5), (1.0, 1.5)], "drums": [(0.5, 0.7)]}
    assert act.read_note_labels(tmp_path / "n.csv") == {"piano": [(0.0, 0.5)]}
    assert act.read_note_labels(tmp_path / "n.json") == {"piano": [(0.0, 0.5)]}
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        act.read_note_labels(tmp_path / "bad.csv")


def test_lab_resampled_to_model_hop(tmp_path):
    lab = tmp_path / "X_ACTIVATION_CONF.lab"
    times = np.arange(10) * 2048 / SR
    s1 = np.linspace(0, 1, 10)
    lines = ["time,S01,S02"] + [f"{t:.4f},{a:.4f},{1 - a:.4f}" for t, a in zip(times, s1)]
    lab.write_text("\n".join(lines) + "\n")
    conf = act.confidence_from_lab(lab, {"piano": ["S01"], "other": ["1", "S02"]}, 19, 1024, SR)
    # even frames sit on the .lab's frames; odd ones halfway between
    np.testing.assert_allclose(conf["piano"][::2], np.round(s1, 4), atol=2e-4)
    np.testing.assert_allclose(conf["piano"][1::2], (s1[:-1] + s1[1:]) / 2, atol=3e-4)
    # stems of one instrument: the max curve, then resampled
    t_lab = times  # rounded in the file; read back as the exact hop-2048 times
    want = np.interp(np.arange(19) * 1024 / SR, t_lab, np.maximum(np.round(s1, 4), np.round(1 - s1, 4)))
    np.testing.assert_allclose(conf["other"], want, atol=1e-6)
    with pytest.raises(ValueError, match="S07"):
        act.confidence_from_lab(lab, {"x": ["S07"]}, 19, 1024, SR)


@pytest.mark.shared_data
@pytest.mark.parametrize("version", ["original", "v2"])
def test_real_medleydb_lab(version):
    path = SHARED / "medleydb" / "annotations_sample" / version / "MusicDelta_Rock_ACTIVATION_CONF.lab"
    if not path.exists():
        pytest.skip(f"{path} absent (../shared/data not mounted)")
    times, cols = act.read_activation_lab(path)
    assert list(cols) == ["S01", "S02", "S03", "S04", "S05"]
    np.testing.assert_allclose(np.diff(times)[:50], 2048 / SR, atol=1e-4)
    n = num_frames(int(round(times[-1] * SR)), 1024)
    conf = act.confidence_from_lab(path, {"drums": ["S01"], "bass": ["S02"]}, n, 1024, SR)
    np.testing.assert_allclose(conf["drums"][::2][: len(times)], cols["S01"][: len(conf["drums"][::2])],
                               atol=1e-6)
    assert conf["drums"].dtype == np.float32 and len(conf["drums"]) == n
