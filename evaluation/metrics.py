"""BSS Eval v4 (SDR, ISR, SIR, SAR) as ``museval.evaluate`` computes it, fast; activity detection scores.

museval (``museval.metrics.bss_eval`` with ``framewise_filters=False``) fits the distortion filters
ONCE per track: a least-squares projection of each estimate onto the 512 delayed copies of every
reference (channels included), from the correlations of the whole signals. Then, per window of
``win`` samples (hop ``hop``), it convolves the *windowed* references with those filters and takes
energy ratios over the window plus the filter tail (``win + 511`` samples). Windows where any
reference, or any estimate, sums to exactly zero over its channels are NaN. A track's score is the
median over its windows (NaN skipped), the corpus' score the median over tracks.

This module computes the same quantities with bounded memory and few large FFTs:
- the correlations (the Gram matrix G of the delayed references and the cross-correlations D with
  the estimates) are accumulated block by block with FFTs of a fixed size, instead of FFTs the
  length of the track;
- the filters are solved exactly as museval does (``np.linalg.solve(G + eps I, D)``), once;
- per window, every projection is done in the frequency domain (rFFT of the window, product with
  the filters' spectra) and every energy is read off the spectrum (Parseval), batched over windows
  (torch, float64);
- several estimates of one reference (the methods compared on a target) share one factorisation.
The numbers equal museval's up to float64 rounding (tests/test_metrics.py compares them).

One deliberate, documented difference is available: ``silent_estimates="score"`` scores windows
where an estimate is exactly silent instead of dropping them. museval drops such windows, which
rewards a method for muting its output where it is unsure (activity weighting does exactly
that); the evaluation therefore selects windows by the references only, the same windows for
every method, and uses ``"score"``. ``"nan"`` (the default) is museval's behaviour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("SDR", "ISR", "SIR", "SAR")
FILTERS_LEN = 512
_EPS = np.finfo(float).eps


@dataclass
class BSSScores:
    """Per-window scores, each (n_estimates, n_windows); NaN where a window is excluded."""

    sdr: np.ndarray
    isr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    win: int
    hop: int

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"SDR": self.sdr, "ISR": self.isr, "SIR": self.sir, "SAR": self.sar}

    def medians(self) -> dict[str, np.ndarray]:
        """Median over windows (NaN skipped, as museval's ``np.nanmedian``), per estimate."""
        out = {}
        for name, values in self.as_dict().items():
            with np.errstate(all="ignore"):
                keep = ~np.isnan(values)
                out[name] = np.array([np.median(v[k]) if k.any() else np.nan
                                      for v, k in zip(values, keep)])
        return out

    def median_where(self, select: np.ndarray, metric: str = "SDR") -> tuple[np.ndarray, np.ndarray]:
        """Median of ``metric`` over the selected windows only (NaN skipped), per estimate, and
        how many windows it took. ``select``: (n_windows,) bool."""
        values = self.as_dict()[metric][:, np.asarray(select, dtype=bool)]
        keep = ~np.isnan(values)
        med = np.array([np.median(v[k]) if k.any() else np.nan for v, k in zip(values, keep)])
        return med, keep.sum(axis=1)


# ------------------------------------------------------------------------------ windows
def window_bounds(n_samples: int, win: int, hop: int) -> list[tuple[int, int]]:
    """museval's ``Framing``: full windows only (a shorter tail is dropped); one window when
    ``win >= n_samples``."""
    if win < n_samples:
        n_win = int(np.floor((n_samples - win + hop) / hop))
        return [(k * hop, min(k * hop + win, n_samples)) for k in range(n_win)]
    return [(0, n_samples)]


def silent_windows(signals: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
    """(n_signals, n_windows) bool: the channel sum is exactly zero over the whole window
    (museval's ``_any_source_silent``, which sums the channels before testing)."""
    out = np.zeros((signals.shape[0], len(bounds)), dtype=bool)
    for w, (a, b) in enumerate(bounds):
        chan_sum = signals[:, a:b].sum(axis=2)
        out[:, w] = ~np.any(chan_sum != 0, axis=1)
    return out


def window_activity(truth: np.ndarray, hop: int, bounds: list[tuple[int, int]]) -> np.ndarray:
    """(n_windows,) share of a window's labelled frames that are active; a frame belongs to the
    window holding its centre (frame k is centred on sample k * hop, as the corpus labels are);
    NaN where a window holds no labelled frame. 0 < share < 1: the target is partly silent there,
    the only scored windows where a gate that closes on silence changes the estimate."""
    from iass.pipelines.corpus_format import frame_centers

    truth = np.asarray(truth, dtype=np.float64)
    centers = frame_centers(len(truth), hop)
    out = np.full(len(bounds), np.nan)
    for w, (a, b) in enumerate(bounds):
        t = truth[(centers >= a) & (centers < b)]
        t = t[~np.isnan(t)]
        if t.size:
            out[w] = float(np.mean(t > 0.5))
    return out


# ------------------------------------------------------------------------- correlations
def _next_pow2(n: int) -> int:
    return 1 << int(np.ceil(np.log2(max(int(n), 1))))


def _cross_correlations(left: np.ndarray, right: np.ndarray, max_lag: int,
                        n_fft: int = 1 << 13, group: int = 16) -> np.ndarray:
    """R[p, q, k + max_lag] = sum_n left[p, n + k] * right[q, n] for k in [-max_lag, max_lag]
    (signals zero outside their support: the linear correlation museval computes with one FFT
    the length of the track).

    ``right`` is cut into blocks of ``n_fft - 2 max_lag`` samples; each block's correlation with
    the matching ``left`` segment (the block extended by ``max_lag`` on both sides) is exact with
    FFTs of ``n_fft`` points, and because the inverse FFT is linear the cross-spectra are summed
    over blocks before ONE inverse FFT per pair. Memory is bounded by ``group`` blocks at a time,
    whatever the track length. left: (P, n), right: (Q, n). Returns float64 (P, Q, 2 max_lag + 1)."""
    import torch

    n = left.shape[1]
    block = n_fft - 2 * max_lag
    if block <= 0:
        raise ValueError(f"n_fft {n_fft} too small for max_lag {max_lag}")
    starts = range(0, n, block)
    P, Q = left.shape[0], right.shape[0]
    left_t, right_t = torch.from_numpy(np.asarray(left)), torch.from_numpy(np.asarray(right))
    acc = torch.zeros((n_fft // 2 + 1, P, Q), dtype=torch.complex128)
    for g0 in range(0, len(starts), group):
        gs = starts[g0: g0 + group]
        seg = torch.zeros((len(gs), P, n_fft), dtype=torch.float64)
        blk = torch.zeros((len(gs), Q, n_fft), dtype=torch.float64)
        for k, b0 in enumerate(gs):
            b1 = min(b0 + block, n)
            s0, s1 = max(b0 - max_lag, 0), min(b1 + max_lag, n)
            seg[k, :, s0 - (b0 - max_lag): s1 - (b0 - max_lag)] = left_t[:, s0:s1]
            blk[k, :, : b1 - b0] = right_t[:, b0:b1]
        # (F, P, blocks) @ (F, blocks, Q): contiguous, or bmm takes a slow strided path
        lf = torch.fft.rfft(seg, dim=2).permute(2, 1, 0).contiguous()
        rf = torch.fft.rfft(blk, dim=2).permute(2, 0, 1).conj().contiguous()
        acc += torch.bmm(lf, rf)
    corr = torch.fft.irfft(acc.permute(1, 2, 0), n_fft, dim=2)
    return corr[:, :, : 2 * max_lag + 1].numpy()


def _gram_and_rhs(refs_flat: np.ndarray, est_flat: np.ndarray, filters_len: int):
    """museval's ``_reshape_G(G)`` and ``D``, from one pass of correlations.

    Rows and columns are indexed (source, channel, delay):
    G[(p, a), (q, b)] = <x_p(. - a), x_q(. - b)> = R_pq[b - a];  D[(p, m), c] = <x_p(. - m), e_c>."""
    L = filters_len
    P = refs_flat.shape[0]
    R = _cross_correlations(refs_flat, np.concatenate([refs_flat, est_flat]), L - 1)
    G = np.empty((P, L, P, L))
    for p in range(P):
        for q in range(P):
            # Toeplitz block T[a, b] = r[L - 1 + b - a]: the reversed sliding windows of r
            G[p, :, q, :] = np.lib.stride_tricks.sliding_window_view(R[p, q], L)[::-1]
    G = G.reshape(P * L, P * L)
    D = R[:, P:][:, :, (L - 1) - np.arange(L)]                        # R[p, c, -m]
    D = np.moveaxis(D, 2, 1).reshape(P * L, est_flat.shape[0])
    return G, D


# ----------------------------------------------------------------------------- BSS v4
def _energy(spec, n_fft: int) -> np.ndarray:
    """Energy of real signals from their rFFT (Parseval: DC and Nyquist once, the other bins
    twice), summed over every axis but the first. spec: complex torch tensor (w, ..., F)."""
    import torch

    w = spec.shape[0]
    vr = torch.view_as_real(spec)                                   # (w, ..., F, 2)
    total = 2.0 * vr.square().reshape(w, -1).sum(1)
    total -= vr[..., 0, :].square().reshape(w, -1).sum(1)
    if n_fft % 2 == 0:
        total -= vr[..., -1, :].square().reshape(w, -1).sum(1)
    return (total / n_fft).numpy()


def _apply_filters(spec, filt):
    """Sum over input signals of spectrum x filter, per frequency: spec (w, inputs, F),
    filt (inputs, F, out) -> (w, out, F), as one batched matrix product over F."""
    import torch

    return torch.bmm(spec.permute(2, 0, 1), filt.permute(1, 0, 2)).permute(1, 2, 0)


def _ratio_db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """museval's ``_safe_db``: +inf where the denominator is exactly 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10 * np.log10(num / den)
    return np.where(den == 0, np.inf, out)


def _check_inputs(references, estimates, reference_of, silent_estimates: str):
    references = np.asarray(references)
    estimates = np.asarray(estimates)
    if references.ndim != 3 or estimates.ndim != 3:
        raise ValueError("references and estimates must be (sources, samples, channels) arrays")
    n_src, n, n_ch = references.shape
    n_est = estimates.shape[0]
    reference_of = list(range(n_est)) if reference_of is None else [int(j) for j in reference_of]
    if estimates.shape[1:] != (n, n_ch) or len(reference_of) != n_est or \
            any(not 0 <= j < n_src for j in reference_of):
        raise ValueError(f"estimates {estimates.shape} (reference_of {reference_of}) do not match "
                         f"references {references.shape}")
    if silent_estimates not in ("nan", "score"):
        raise ValueError(f"silent_estimates must be 'nan' or 'score', not {silent_estimates!r}")
    return references, estimates, reference_of


def _solve_filters(refs_flat: np.ndarray, est_flat: np.ndarray, reference_of: list[int],
                   n_src: int, n_ch: int, L: int) -> tuple[list, list]:
    """museval's distortion filters on the whole signals (``compute_GsfC`` / ``compute_Cj``
    without framewise filters), per estimate: onto every reference (``C_all``, (src*ch, L, ch))
    and onto its own reference only (``C_own``, (ch, L, ch))."""
    from scipy.linalg import lu_factor, lu_solve

    G, D = _gram_and_rhs(refs_flat, est_flat, L)
    # museval solves (G + eps I) C = D with LAPACK gesv (LU) per estimate; one LU serves all
    G[np.diag_indices_from(G)] += _EPS
    C = lu_solve(lu_factor(G, check_finite=False), D, check_finite=False)
    block_len = n_ch * L
    C_all, C_own, own_lu = [], [], {}
    for e, j in enumerate(reference_of):
        cols = slice(e * n_ch, (e + 1) * n_ch)
        C_all.append(C[:, cols].reshape(n_src * n_ch, L, n_ch))
        own = slice(j * block_len, (j + 1) * block_len)
        if j not in own_lu:  # the diagonal block already carries + eps I
            own_lu[j] = lu_factor(G[own, own], check_finite=False)
        C_own.append(lu_solve(own_lu[j], D[own, cols], check_finite=False).reshape(n_ch, L, n_ch))
    return C_all, C_own


def _score_windows(out: dict, refs_flat: np.ndarray, est_flat: np.ndarray, C_all: list, C_own: list,
                   reference_of: list[int], bounds: list, excluded: np.ndarray, n_ch: int, L: int,
                   window_batch: int) -> None:
    """Fill ``out[metric][e, w]`` for every window not excluded. Windows all have the same length
    except when a single window spans the whole track; per window everything happens in the
    frequency domain (torch: complex128, all cores)."""
    import torch

    refs_t, est_t = torch.from_numpy(refs_flat), torch.from_numpy(est_flat)
    for length in sorted({b - a for a, b in bounds}):
        n_fft = _next_pow2(length + L - 1)
        filt_all = [torch.fft.rfft(torch.from_numpy(c), n_fft, dim=1) for c in C_all]   # (src*ch_in, F, ch_out)
        filt_own = [torch.fft.rfft(torch.from_numpy(c), n_fft, dim=1) for c in C_own]   # (ch_in, F, ch_out)
        todo = [w for w, (a, b) in enumerate(bounds) if b - a == length and not excluded[w]]
        for k in range(0, len(todo), window_batch):
            ws = todo[k: k + window_batch]
            ref_win = torch.stack([refs_t[:, bounds[w][0]: bounds[w][1]] for w in ws]).double()
            est_win = torch.stack([est_t[:, bounds[w][0]: bounds[w][1]] for w in ws]).double()
            S = torch.fft.rfft(ref_win, n_fft, dim=2)                         # (w, src*ch, F)
            E = torch.fft.rfft(est_win, n_fft, dim=2)
            del ref_win, est_win
            true_energy = {}
            for e, j in enumerate(reference_of):
                s_true = S[:, j * n_ch: (j + 1) * n_ch]                       # (w, ch, F)
                if j not in true_energy:
                    true_energy[j] = _energy(s_true, n_fft)
                e_true = true_energy[j]
                p_all = _apply_filters(S, filt_all[e])
                p_own = _apply_filters(s_true, filt_own[e])
                e_j = E[:, e * n_ch: (e + 1) * n_ch]
                out["SDR"][e, ws] = _ratio_db(e_true, _energy(e_j - s_true, n_fft))
                out["ISR"][e, ws] = _ratio_db(e_true, _energy(p_own - s_true, n_fft))
                out["SIR"][e, ws] = _ratio_db(_energy(p_own, n_fft), _energy(p_all - p_own, n_fft))
                out["SAR"][e, ws] = _ratio_db(_energy(p_all, n_fft), _energy(e_j - p_all, n_fft))


def bss_eval_v4(references: np.ndarray, estimates: np.ndarray, win: int = 44100, hop: int = 44100,
                filters_len: int = FILTERS_LEN, silent_estimates: str = "nan",
                reference_of=None, window_batch: int = 8) -> BSSScores:
    """BSS Eval v4 images metrics of ``museval.evaluate(references, estimates, win, hop)``.

    references: (n_sources, n_samples, n_channels); estimates: (n_estimates, n_samples,
    n_channels). Estimate ``e`` is scored against reference ``reference_of[e]`` (default ``e``,
    museval's pairing). Unlike museval, several estimates may share a reference (methods compared
    on one target: G is factorised once) and references without an estimate only act as
    interferers (the rest of the mixture).
    silent_estimates: "nan" drops windows where an estimate is silent (museval), "score" keeps them.
    """
    references, estimates, reference_of = _check_inputs(references, estimates, reference_of,
                                                        silent_estimates)
    n_src, n, n_ch = references.shape
    n_est = estimates.shape[0]
    L = int(filters_len)
    refs_flat = np.ascontiguousarray(np.moveaxis(references, 2, 1)).reshape(n_src * n_ch, n)
    est_flat = np.ascontiguousarray(np.moveaxis(estimates, 2, 1)).reshape(n_est * n_ch, n)
    C_all, C_own = _solve_filters(refs_flat, est_flat, reference_of, n_src, n_ch, L)

    bounds = window_bounds(n, int(win), int(hop))
    excluded = silent_windows(references, bounds).any(axis=0)
    if silent_estimates == "nan":
        excluded |= silent_windows(estimates, bounds).any(axis=0)
    out = {m: np.full((n_est, len(bounds)), np.nan) for m in METRICS}
    _score_windows(out, refs_flat, est_flat, C_all, C_own, reference_of, bounds, excluded, n_ch, L,
                   window_batch)
    if silent_estimates == "score":
        # a silent estimate has no interference and no artifacts: SIR and SAR are 0/0, undefined
        # (museval never gets here: it drops these windows); SDR and ISR are 0 dB
        silent = silent_windows(estimates, bounds)
        out["SIR"][silent] = np.nan
        out["SAR"][silent] = np.nan
    return BSSScores(out["SDR"], out["ISR"], out["SIR"], out["SAR"], int(win), int(hop))


def score_target(target: np.ndarray, rest: np.ndarray, estimates, win: int = 44100,
                 hop: int = 44100, silent_estimates: str = "score") -> BSSScores:
    """One target of a mixture, any number of estimates of it (one per method).

    References are (target, rest of the mixture): the interference subspace is spanned by the
    delayed target and the delayed rest (= the delayed mixture), so the score of a target does
    not depend on which other targets a model separates, and a target silent in a window drops
    that window for this target only (museval, given all targets at once, drops it for all).
    ``estimates``: (n, 2) or (n_estimates, n, 2). Returns scores with one row per estimate."""
    estimates = np.asarray(estimates)
    if estimates.ndim == 2:
        estimates = estimates[None]
    n = min(len(target), len(rest), estimates.shape[1])
    refs = np.stack([target[:n], rest[:n]])
    return bss_eval_v4(refs, estimates[:, :n], win, hop, silent_estimates=silent_estimates,
                       reference_of=[0] * len(estimates))


# ------------------------------------------------------------------------ silence scores
SILENCE_METRICS = ("PES", "EPS")
SILENCE_EPS = 1e-12   # Schulze-Forster et al.'s epsilon: a silent window scores -120 dB


def silence_scores(target: np.ndarray, estimates, win: int = 44100, hop: int = 44100) -> dict[str, np.ndarray]:
    """PES and EPS (Schulze-Forster, Doire, Richard & Badeau, "Weakly informed audio source
    separation", WASPAA 2019): what BSS Eval cannot see, because it drops silent windows.

    On the same windows as :func:`bss_eval_v4` (``window_bounds``; a window is silent when all its
    samples of all channels are exactly zero):
    - PES, predicted energy at silence: the mean over the windows where the TARGET is silent of
      ``10 log10(sum of the estimate's squared samples + 1e-12)``; leakage where the target does not
      play (a muted estimate scores -120 dB);
    - EPS, energy at predicted silence: the mean over the windows where the ESTIMATE is silent
      and the target is not of ``10 log10(sum of the target's squared samples + 1e-12)``: what
      muting lost (the paper's definition; its code's default also counts windows where both are
      silent, at -120 dB, which makes every method that passes a silent mixture through "lose"
      -120 dB).
    Lower is better for both; NaN when there is no such window (for EPS: nothing was lost).
    target (n, C); estimates (n, C) or (n_estimates, n, C).
    Returns {"PES": (n_estimates,), "EPS": (n_estimates,)}."""
    target = np.asarray(target)
    estimates = np.asarray(estimates)
    if estimates.ndim == 2:
        estimates = estimates[None]
    n = min(len(target), estimates.shape[1])
    bounds = window_bounds(n, int(win), int(hop))

    def energy_and_silence(x):
        e = np.array([np.sum(np.square(x[a:b], dtype=np.float64)) for a, b in bounds])
        s = np.array([not np.any(x[a:b]) for a, b in bounds], dtype=bool)
        return e, s

    def mean_db(energy):
        return float(np.mean(10 * np.log10(energy + SILENCE_EPS))) if energy.size else float("nan")

    t_energy, t_silent = energy_and_silence(target[:n])
    out = {"PES": np.full(len(estimates), np.nan), "EPS": np.full(len(estimates), np.nan)}
    for k, est in enumerate(estimates):
        e_energy, e_silent = energy_and_silence(est[:n])
        out["PES"][k] = mean_db(e_energy[t_silent])
        out["EPS"][k] = mean_db(t_energy[e_silent & ~t_silent])
    return out


# ----------------------------------------------------------------------- activity scores
def activity_scores(probability: np.ndarray, decision: np.ndarray, truth: np.ndarray) -> dict:
    """Frame-level detection scores; frames whose truth is unknown (NaN) are skipped.

    probability: predicted P(active) per frame (for ROC-AUC); decision: the binary decision
    actually applied (threshold + median filter); truth: 1 / 0 / NaN."""
    probability = np.asarray(probability, dtype=np.float64).ravel()
    decision = np.asarray(decision).astype(bool).ravel()
    truth = np.asarray(truth, dtype=np.float64).ravel()
    known = ~np.isnan(truth)
    p, d, t = probability[known], decision[known], truth[known] > 0.5
    tp = int(np.sum(d & t))
    fp = int(np.sum(d & ~t))
    fn = int(np.sum(~d & t))
    tn = int(np.sum(~d & ~t))
    precision = tp / (tp + fp) if tp + fp else np.nan
    recall = tp / (tp + fn) if tp + fn else np.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
    return {"precision": precision, "recall": recall, "f1": f1, "auc": roc_auc(p, t),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn, "frames": int(known.sum())}


def roc_auc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN with one class only."""
    from scipy.stats import rankdata

    score = np.asarray(score, dtype=np.float64).ravel()
    truth = np.asarray(truth).astype(bool).ravel()
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
