"""Model presets: the paper's IASS U-Net and a smaller one that trains on a CPU.

``params.yaml`` picks one with ``model.iass.preset``; any key of the preset can be overridden in
``model.iass`` (e.g. ``channels: [8, 16, 24]``). The resolved configuration is written into the
run directory, so a run always says which network it trained.

Cost of one 6 s chunk, forward (measured by ``bench/bench_model.py``): ``paper`` ~21 GFLOP for
one target's network; ``cpu`` (half the bins, half the channels) 4.9 GFLOP for the demo's
six-target network (one U-Net, six output layers). The decoder's convolutions at full
resolution and the bins -> output bins linear layer dominate; docs/speed.md says where a
training step's time goes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from iass.errors import ConfigError

IASS_PRESETS: dict[str, dict[str, Any]] = {
    # biboamy/Source_Separation_Inst (model.py / block.py): n_fft 4096, 16 kHz bandwidth
    # (1487 bins), channels 16/32/48.
    "paper": {"n_fft": 4096, "bandwidth_hz": 16000.0, "channels": [16, 32, 48]},
    # Same structure, half the FFT size (744 bins kept) and half the channels.
    "cpu": {"n_fft": 2048, "bandwidth_hz": 16000.0, "channels": [8, 16, 24]},
    # For tests: a toy network that still has every part of the design.
    "tiny": {"n_fft": 512, "bandwidth_hz": 16000.0, "channels": [2, 4, 6]},
}

IASS_KEYS = ("n_fft", "bandwidth_hz", "channels")


def bandwidth_to_max_bin(sample_rate: float, n_fft: int, bandwidth_hz: float) -> int:
    """Number of STFT bins up to ``bandwidth_hz`` (Open-Unmix's ``utils.bandwidth_to_max_bin``)."""
    freqs = np.linspace(0, float(sample_rate) / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth_hz)[0])) + 1


def resolve_iass(model_section: dict[str, Any], sample_rate: int, hop: int) -> dict[str, Any]:
    """The IASS network configuration: preset, then any explicit override in ``model.iass``."""
    name = str(model_section.get("preset", "paper"))
    if name not in IASS_PRESETS:
        raise ConfigError(f"params.yaml model.iass.preset: unknown preset {name!r} "
                         f"(known: {', '.join(IASS_PRESETS)})")
    cfg = dict(IASS_PRESETS[name])
    for key in IASS_KEYS:
        if model_section.get(key) is not None:
            cfg[key] = model_section[key]
    cfg["channels"] = [int(c) for c in cfg["channels"]]
    if len(cfg["channels"]) != 3:
        raise ConfigError(f"params.yaml model.iass.channels: expected 3 values, got {cfg['channels']}")
    cfg["n_fft"] = int(cfg["n_fft"])
    cfg.update(
        preset=name,
        hop=int(hop),
        sample_rate=int(sample_rate),
        max_bin=bandwidth_to_max_bin(sample_rate, cfg["n_fft"], cfg["bandwidth_hz"]),
        multi_target=bool(model_section.get("multi_target", True)),
        activity_weight=float(model_section.get("activity_weight", 1.0)),
        target_balance=bool(model_section.get("target_balance", False)),
    )
    pitch_weight = model_section.get("pitch_weight")
    try:
        pitch_weight = float(pitch_weight or 0.0)
    except (TypeError, ValueError):
        raise ConfigError(f"params.yaml model.iass.pitch_weight: {pitch_weight!r} is not a number") from None
    if not pitch_weight >= 0:
        raise ConfigError(f"params.yaml model.iass.pitch_weight: {pitch_weight!r}, expected 0 (no pitch "
                          "head) or a positive loss weight")
    if pitch_weight > 0:   # recorded only when on: a run without the head has the config of before
        cfg["pitch_weight"] = pitch_weight
    return cfg


def resolve_umx(model_section: dict[str, Any], stft: dict[str, Any], sample_rate: int,
                hop: int) -> dict[str, Any]:
    """Open-Unmix's configuration: its own defaults unless params.yaml says otherwise."""
    n_fft = int(model_section.get("n_fft") or stft.get("n_fft", 4096))
    bandwidth = float(model_section.get("bandwidth_hz", 16000.0))
    return {
        "n_fft": n_fft,
        "hop": int(hop),
        "sample_rate": int(sample_rate),
        "hidden_size": int(model_section.get("hidden_size", 512)),
        "nb_channels": int(model_section.get("nb_channels", 2)),
        "nb_layers": int(model_section.get("nb_layers", 3)),
        "unidirectional": bool(model_section.get("unidirectional", False)),
        "bandwidth_hz": bandwidth,
        "max_bin": bandwidth_to_max_bin(sample_rate, n_fft, bandwidth),
    }
