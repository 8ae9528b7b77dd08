"""Chunked separation == one-shot separation; activity weighting; `iass separate` on real files."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import medfilt

from _separate_reference import separate_oneshot
from iass.evaluation.separate import SeparationConfig, median_filter_binary, separate, separate_file
from iass.evaluation.stft import OverlapAdd, stft_frames
from iass.pipelines.corpus_format import num_frames

SR = 44100


class ContextSeparator:
    """A deterministic separator of the inference protocol whose masks AND activity depend on
    +-3 neighbouring frames (a receptive field in time), so a chunk without enough context
    would differ from the one-shot result."""

    def __init__(self, n_fft=1024, hop=256, targets=("vocals", "bass"), has_activity=True):
        self.targets, self.n_fft, self.hop = list(targets), n_fft, hop
        self.sample_rate, self.has_activity, self.name = SR, has_activity, "context"
        self.context_frames = 3

    def masks(self, mag):
        C, F, T = mag.shape
        smooth = torch.nn.functional.avg_pool1d(mag.reshape(C * F, 1, T), 7, stride=1, padding=3,
                                                count_include_pad=False).reshape(C, F, T)
        low = torch.zeros(F)
        low[: F // 8] = 1.0
        m0 = low[None, :, None] * (1.0 + 0.2 * torch.tanh(smooth - mag))
        m1 = (1 - low)[None, :, None] * torch.sigmoid(smooth)
        energy = smooth.mean((0, 1))
        logits = torch.stack([torch.log(energy + 1e-6) + 1.0, 2.0 - torch.log(energy + 1e-6)])
        return torch.stack([m0, m1]).clamp_min(0), (logits if self.has_activity else None)


def _mixture(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with loud and silent stretches (so activity switches on and off)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = np.repeat(rng.uniform(0, 1, n // 2205 + 1) > 0.4, 2205)[:n].astype(np.float32)
    return (0.3 * rng.standard_normal((n, 2)) * env[:, None]).astype(np.float32)


def test_stft_frames_equal_torch_stft():
    x = _mixture(1.3)
    n = len(x)
    ref = torch.stft(torch.from_numpy(x.T.copy()), 1024, 256, window=torch.hann_window(1024),
                     center=True, return_complex=True)
    T = num_frames(n, 256)
    assert ref.shape[-1] == T
    for lo, hi in [(0, T), (0, 3), (5, 40), (T - 4, T), (T - 1, T)]:
        got = stft_frames(lambda s, c: x[s: s + c], n, 1024, 256, lo, hi)
        torch.testing.assert_close(got, ref[..., lo:hi], atol=2e-5, rtol=1e-5)


def test_overlap_add_equals_torch_istft():
    rng = np.random.default_rng(2)
    n, n_fft, hop = 20_000, 1024, 256
    T = num_frames(n, hop)
    spec = torch.from_numpy(rng.standard_normal((3, 2, n_fft // 2 + 1, T))
                            + 1j * rng.standard_normal((3, 2, n_fft // 2 + 1, T))).to(torch.complex64)
    ref = torch.istft(spec.reshape(6, n_fft // 2 + 1, T), n_fft, hop, window=torch.hann_window(n_fft),
                      center=True, length=n).reshape(3, 2, n).permute(0, 2, 1).numpy()
    ola = OverlapAdd(n, n_fft, hop)
    parts = [ola.push(spec[..., a: min(a + 7, T)]) for a in range(0, T, 7)]
    got = np.concatenate(parts, axis=1)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("weighting,wiener", [("none", False), ("hard", False), ("soft", False),
                                              ("hard", True)])
def test_chunked_separation_equals_one_shot(weighting, wiener):
    x = _mixture(3.0)
    sep = ContextSeparator()
    # 0.5 s chunks: many chunk boundaries; with Wiener, chunks are whole 300-frame blocks
    cfg = SeparationConfig(weighting=weighting, median_frames=21, wiener=wiener, chunk_seconds=0.5)
    chunked = separate(x, sep, cfg)
    oneshot = separate_oneshot(x, sep, cfg)
    assert chunked.estimates.shape == (2, len(x), 2)
    scale = np.abs(oneshot.estimates).max()
    np.testing.assert_allclose(chunked.estimates, oneshot.estimates, atol=2e-5 * scale)
    np.testing.assert_array_equal(chunked.decision, oneshot.decision)
    np.testing.assert_allclose(chunked.probability, oneshot.probability, atol=1e-6)
    assert 0 < chunked.decision.mean() < 1                       # activity switches on and off


def test_chunk_without_enough_context_differs():
    """The equality above is not trivial: with no context the chunk edges change the result."""
    x = _mixture(3.0)
    cfg = SeparationConfig(weighting="none", chunk_seconds=0.5, context_frames=0, median_frames=1)
    a = separate(x, ContextSeparator(), cfg).estimates
    b = separate_oneshot(x, ContextSeparator(), cfg).estimates
    assert np.abs(a - b).max() > 1e-3


def test_median_filter_equals_scipy_medfilt():
    rng = np.random.default_rng(4)
    raw = rng.uniform(size=(3, 200)) < 0.5
    for size in (1, 3, 21):
        ours = median_filter_binary(raw, size)
        ref = np.stack([medfilt(r.astype(float), size) for r in raw]) > 0.5
        np.testing.assert_array_equal(ours, ref)


def test_hard_weighting_zeroes_frames_predicted_inactive():
    x = _mixture(3.0, seed=1)
    sep = ContextSeparator()
    hard = separate(x, sep, SeparationConfig(weighting="hard", median_frames=5, chunk_seconds=1.0))
    none = separate(x, sep, SeparationConfig(weighting="none", chunk_seconds=1.0))
    soft = separate(x, sep, SeparationConfig(weighting="soft", chunk_seconds=1.0))
    dec = hard.decision
    hop, half = sep.hop, sep.n_fft // 2
    T = dec.shape[1]
    checked = 0
    for k in range(2):
        for t in range(T):
            # samples near frame t overlap frames t-2..t+2 (n_fft = 4 hops): all inactive -> 0
            if not any(dec[k, f] for f in range(max(0, t - 2), min(T, t + 3))):
                s0, s1 = max(0, t * hop - hop // 2), min(len(x), t * hop + hop // 2)
                assert np.all(hard.estimates[k, s0:s1] == 0.0), (k, t)
                checked += 1
            if all(dec[k, f] for f in range(max(0, t - 2), min(T, t + 3))):
                s0, s1 = max(0, t * hop - hop // 2), min(len(x), t * hop + hop // 2)
                np.testing.assert_allclose(hard.estimates[k, s0:s1], none.estimates[k, s0:s1], atol=1e-6)
    assert checked > 10
    # the decision is the thresholded probability, median filtered (5 frames)
    expected = np.stack([medfilt((p >= 0.5).astype(float), 5) for p in hard.probability]) > 0.5
    np.testing.assert_array_equal(dec, expected)
    # soft weighting == the probability times the mask, i.e. scales each frame's spectrum
    spec_none = torch.stft(torch.from_numpy(none.estimates[0].T.copy()), sep.n_fft, hop,
                           window=torch.hann_window(sep.n_fft), return_complex=True)
    spec_soft = torch.stft(torch.from_numpy(soft.estimates[0].T.copy()), sep.n_fft, hop,
                           window=torch.hann_window(sep.n_fft), return_complex=True)
    energy_ratio = (spec_soft.abs() ** 2).sum((0, 1)) / (spec_none.abs() ** 2).sum((0, 1)).clamp_min(1e-9)
    p = torch.from_numpy(soft.probability[0])
    mid = slice(3, T - 3)   # frames away from the track ends, where neighbours leak little
    loud = (spec_none.abs() ** 2).sum((0, 1))[mid] > 1e-3
    assert torch.corrcoef(torch.stack([energy_ratio[mid][loud], (p[mid] ** 2)[loud]]))[0, 1] > 0.9


def test_per_target_thresholds_apply_to_their_own_target():
    x = _mixture(3.0, seed=2)
    sep = ContextSeparator()
    cfg = {"weighting": "hard", "median_frames": 5, "chunk_seconds": 0.5}
    both = separate(x, sep, SeparationConfig(threshold=(0.3, 0.7), **cfg))
    one = {th: separate(x, sep, SeparationConfig(threshold=th, **cfg)) for th in (0.3, 0.7)}
    assert not np.array_equal(one[0.3].decision, one[0.7].decision)   # the thresholds matter here
    for k, th in enumerate((0.3, 0.7)):
        np.testing.assert_array_equal(both.decision[k], one[th].decision[k])
        np.testing.assert_array_equal(both.estimates[k], one[th].estimates[k])
    oneshot = separate_oneshot(x, sep, SeparationConfig(threshold=(0.3, 0.7), **cfg))
    np.testing.assert_array_equal(both.decision, oneshot.decision)
    with pytest.raises(ValueError, match="3 per-target thresholds for 2 targets"):
        separate(x, sep, SeparationConfig(threshold=(0.2, 0.3, 0.4), **cfg))
    with pytest.raises(ValueError, match="threshold must be in"):
        SeparationConfig(threshold=(0.2, 1.3))


def test_oracle_gate_is_the_hard_gate_with_given_decisions():
    """weighting 'oracle' gates the masks by the frames it is given: the detector's own decisions
    reproduce hard weighting exactly, all-open gates (or unknown, NaN) the unweighted output."""
    from iass.evaluation.separate import separate_variants

    x = _mixture(3.0, seed=3)
    sep = ContextSeparator()
    cfg = SeparationConfig(weighting="hard", median_frames=5, chunk_seconds=1.0)
    hard = separate(x, sep, cfg)
    gates = hard.decision.astype(np.float32)
    gates[1, :7] = np.nan                      # unknown frames stay open
    got = separate_variants(x, sep, cfg, ("hard", "none", "oracle"), oracle=gates)
    np.testing.assert_array_equal(got["oracle"].estimates[0], hard.estimates[0])
    opened = hard.decision.copy()
    opened[1, :7] = True
    ref = separate_variants(x, sep, cfg, ("oracle",), oracle=opened.astype(np.float32))["oracle"]
    np.testing.assert_array_equal(got["oracle"].estimates[1], ref.estimates[1])
    ones = separate_variants(x, sep, cfg, ("oracle",), oracle=np.ones_like(gates))["oracle"]
    np.testing.assert_array_equal(ones.estimates, got["none"].estimates)
    shorter = separate_variants(x, sep, cfg, ("oracle",), oracle=np.ones((2, 10), np.float32))["oracle"]
    np.testing.assert_array_equal(shorter.estimates, got["none"].estimates)   # past the labels: open
    with pytest.raises(ValueError, match="oracle needs the reference gates"):
        separate_variants(x, sep, cfg, ("oracle",))


def test_no_activity_means_no_weighting():
    x = _mixture(1.0)
    sep = ContextSeparator(has_activity=False)
    a = separate(x, sep, SeparationConfig(weighting="hard", chunk_seconds=0.3))
    b = separate(x, sep, SeparationConfig(weighting="none", chunk_seconds=0.3))
    assert a.probability is None
    np.testing.assert_array_equal(a.estimates, b.estimates)


def test_separate_file_wav_mp3_and_resampling(tmp_path):
    """A user's WAV at another rate and an MP3: outputs at the model rate, one WAV per target,
    the activity table per frame; the WAV path equals separating the resampled mixture."""
    import soxr

    x = _mixture(2.0, seed=3)
    wav = tmp_path / "song.wav"
    sf.write(wav, soxr.resample(x, SR, 32000), 32000, subtype="FLOAT")
    mp3 = tmp_path / "song.mp3"
    sf.write(mp3, x, SR, format="MP3")
    sep = ContextSeparator()
    cfg = SeparationConfig(weighting="hard", chunk_seconds=0.5)
    for path in (wav, mp3):
        out = tmp_path / f"out-{path.suffix[1:]}"
        summary = separate_file(path, sep, out, cfg)
        n = summary["samples"]
        assert abs(n - len(x)) < 0.01 * SR
        for target in sep.targets:
            audio, rate = sf.read(out / f"{target}.wav", always_2d=True)
            assert rate == SR and audio.shape == (n, 2) and np.abs(audio).max() > 0
        import polars as pl

        table = pl.read_parquet(out / "activity.parquet")
        assert table.height == num_frames(n, sep.hop)
        assert set(table.columns) >= {"frame", "time_s", "vocals_probability", "vocals_active"}
        csv = pl.read_csv(out / "activity.csv")
        assert csv.height == table.height
        assert csv["bass_active"].to_list() == table["bass_active"].cast(pl.Int64).to_list()
    assert any("resampled 32000 -> 44100" in note for note in separate_file(wav, sep, tmp_path / "again", cfg)["notes"])
    # the resampled WAV's estimates equal separating the same resampled audio in memory
    with sf.SoundFile(wav) as f:
        assert f.samplerate == 32000
    from iass.evaluation.audio_input import open_mixture

    with open_mixture(wav, SR) as mix:
        resampled = mix.read(0, mix.n_samples)
    expected = separate(resampled, sep, cfg).estimates[0]
    got, _ = sf.read(tmp_path / "out-wav" / "vocals.wav", dtype="float32")
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_separate_file_refuses_bad_input(tmp_path):
    from iass.evaluation.audio_input import AudioInputError

    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    with pytest.raises(AudioInputError, match="notes.txt"):
        separate_file(bad, ContextSeparator(), tmp_path / "out")
    surround = tmp_path / "six.wav"
    sf.write(surround, np.zeros((SR, 6), np.float32), SR)
    with pytest.raises(AudioInputError, match="6 channels"):
        separate_file(surround, ContextSeparator(), tmp_path / "out")
