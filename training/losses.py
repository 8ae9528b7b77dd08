"""The training loss: MSE on magnitudes + lambda x BCE-with-logits on frame activity.

Both terms are masked: a target whose audio the corpus does not separate (``known`` False) is
out of the MSE, and a frame whose activity is unknown (NaN) is out of the BCE. With everything
known the MSE equals ``F.mse_loss(estimate, target)`` (Open-Unmix's loss) and the BCE equals
``F.binary_cross_entropy_with_logits(logits, labels)``.

Target balance (``model.iass.target_balance``): a network shared by K targets gets the sum of the
targets' gradients in its trunk, so the loud targets (vocals, drums) drown the quiet, sparse ones
(guitars, piano: 2-6x less magnitude energy than vocals in the demo corpus' chunks). Open-Unmix does not have this
problem: one network per target, and Adam normalises each network's gradient scale. With balance
on, target k's squared error is weighted by ``mean_j(E_j) / E_k`` (E = mean squared target
magnitude over the statistics chunks), so every target weighs the same in the shared trunk.

Multi-pitch (``model.iass.pitch_weight`` > 0): a third term, ``pitch_weight`` x the BCE of the
pitch head's (B, K, T, 88) logits against the frame x key piano roll, masked where the pitch is
unknown (NaN: real tracks, drums, a target the corpus does not separate). Without a pitch head
the loss is computed exactly as before (no third term, not even a zero).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossTerms:
    total: torch.Tensor
    mse: torch.Tensor
    bce: torch.Tensor
    mse_weight: torch.Tensor   # number of (example, target) pairs in the MSE
    bce_weight: torch.Tensor   # number of labelled frames in the BCE
    pitch: torch.Tensor | None = None         # masked BCE of the pitch head (None: no head)
    pitch_weight: torch.Tensor | None = None  # number of labelled (frame, key) cells in it


def masked_mse(estimate: torch.Tensor, target: torch.Tensor, known: torch.Tensor,
               target_weights: torch.Tensor | None = None):
    """estimate, target (B, K, ...); known (B, K) bool -> (mean over known pairs, their count).
    ``target_weights`` (K,): each target's squared error scaled by its weight (None = all 1)."""
    # F.mse_loss's elementwise squared error: the same values as (estimate - target) ** 2, and
    # one fused backward pass over the (B, K, C, F, T) tensors instead of pow's three
    per_pair = F.mse_loss(estimate, target, reduction="none").flatten(2).mean(-1)   # (B, K)
    if target_weights is not None:
        per_pair = per_pair * target_weights.to(per_pair)[None]
    weight = known.to(per_pair.dtype)
    count = weight.sum()
    return (per_pair * weight).sum() / count.clamp_min(1.0), count


def masked_bce_with_logits(logits: torch.Tensor, labels: torch.Tensor):
    """logits, labels (B, K, T) (or any shape, e.g. pitch's (B, K, T, 88)); NaN labels are
    unknown -> (mean over labelled entries, count)."""
    labelled = ~torch.isnan(labels)
    weight = labelled.to(logits.dtype)
    safe = torch.where(labelled, labels, torch.zeros_like(labels))
    per_frame = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")
    count = weight.sum()
    return (per_frame * weight).sum() / count.clamp_min(1.0), count


def separation_loss(estimate, target, known, logits=None, labels=None,
                    activity_weight: float = 1.0, target_weights=None, pitch_logits=None,
                    pitch_labels=None, pitch_weight: float = 0.0) -> LossTerms:
    mse, n_mse = masked_mse(estimate, target, known, target_weights)
    if logits is None:
        zero = mse.new_zeros(())
        return LossTerms(mse, mse, zero, n_mse, zero)
    bce, n_bce = masked_bce_with_logits(logits, labels)
    if pitch_logits is None:
        return LossTerms(mse + activity_weight * bce, mse, bce, n_mse, n_bce)
    pitch, n_pitch = masked_bce_with_logits(pitch_logits, pitch_labels)
    return LossTerms(mse + activity_weight * bce + pitch_weight * pitch, mse, bce, n_mse, n_bce,
                     pitch, n_pitch)
