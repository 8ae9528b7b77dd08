"""Statistics of the training data measured before the first step: the input normalisation
(Open-Unmix's ``get_statistics``) and the targets' energies that balance the loss."""
from __future__ import annotations

import math

import torch

from iass.training.data import ChunkConfig, StepBatchSampler, TrainChunks, loader_options, magnitude


def input_statistics(corpus_root, cfg: ChunkConfig, n_fft: int, hop: int, examples: int,
                     workers: int, target_energy: bool = False):
    """Per-bin mean and std of the mono mixture magnitude over ``examples`` training chunks
    (Open-Unmix's ``get_statistics``, std floored at 1e-4 x its max), no augmentation; with
    ``target_energy``, also each target's mean squared magnitude over the chunks where its audio
    is known (for the target balance of the loss; NaN for a target never known), else None."""
    stats_cfg = ChunkConfig(**{**cfg.__dict__, "seed": cfg.seed + 1, "pitch": False})  # its own stream
    ds = TrainChunks(corpus_root, stats_cfg, augment=False)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=StepBatchSampler(0, max(1, math.ceil(examples / 4)), 4),
        generator=torch.Generator().manual_seed(cfg.seed), **loader_options(workers))
    total = total_sq = None
    count = 0
    n_targets = len(cfg.targets)
    energy, known_n = torch.zeros(n_targets, dtype=torch.float64), torch.zeros(n_targets, dtype=torch.float64)
    for mixture, targets, known, *_ in loader:   # (a 5th item: pitch rolls, unused here)
        if target_energy:
            per_pair = magnitude(targets.double(), n_fft, hop).pow(2).flatten(2).mean(-1)  # (B, K)
            energy += (per_pair * known).sum(0)
            known_n += known.double().sum(0)
        mono = magnitude(mixture.double(), n_fft, hop).mean(1)        # (B, F, T)
        frames = mono.transpose(1, 2).reshape(-1, mono.shape[1])
        total = frames.sum(0) if total is None else total + frames.sum(0)
        total_sq = (frames**2).sum(0) if total_sq is None else total_sq + (frames**2).sum(0)
        count += frames.shape[0]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    std = torch.maximum(std, 1e-4 * std.max())
    return mean.float(), std.float(), (energy / known_n if target_energy else None)


def balance_weights(target_energy: torch.Tensor) -> torch.Tensor:
    """mean_j(E_j) / E_k per target (1 for a target whose energy is unknown or zero)."""
    e = torch.as_tensor(target_energy, dtype=torch.float64)
    ok = torch.isfinite(e) & (e > 0)
    w = torch.ones_like(e)
    if ok.any():
        w[ok] = e[ok].mean() / e[ok]
    return w.float()
