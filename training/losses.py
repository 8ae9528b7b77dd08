"""The training loss: MSE on magnitudes + lambda x BCE-with-logits on frame activity.

Both terms are masked: a target whose audio the corpus does not separate (``known`` False) is
out of the MSE, and a frame whose activity is unknown (NaN) is out of the BCE. With everything
known the MSE equals ``F.mse_loss(estimate, target)`` (Open-Unmix's loss) and the BCE equals
``F.binary_cross_entropy_with_logits(logits, labels)``.
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


def masked_mse(estimate: torch.Tensor, target: torch.Tensor, known: torch.Tensor):
    """estimate, target (B, K, ...); known (B, K) bool -> (mean over known pairs, their count)."""
    per_pair = (estimate - target).pow(2).flatten(2).mean(-1)          # (B, K)
    weight = known.to(per_pair.dtype)
    count = weight.sum()
    return (per_pair * weight).sum() / count.clamp_min(1.0), count


def masked_bce_with_logits(logits: torch.Tensor, labels: torch.Tensor):
    """logits, labels (B, K, T); NaN labels are unknown -> (mean over labelled frames, count)."""
    labelled = ~torch.isnan(labels)
    weight = labelled.to(logits.dtype)
    safe = torch.where(labelled, labels, torch.zeros_like(labels))
    per_frame = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")
    count = weight.sum()
    return (per_frame * weight).sum() / count.clamp_min(1.0), count


def separation_loss(estimate, target, known, logits=None, labels=None,
                    activity_weight: float = 1.0) -> LossTerms:
    mse, n_mse = masked_mse(estimate, target, known)
    if logits is None:
        zero = mse.new_zeros(())
        return LossTerms(mse, mse, zero, n_mse, zero)
    bce, n_bce = masked_bce_with_logits(logits, labels)
    return LossTerms(mse + activity_weight * bce, mse, bce, n_mse, n_bce)
