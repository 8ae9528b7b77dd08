"""Separation real-time factor on 2 CPU cores, six targets, full-track chunked inference.

The real IASS network of ``iass.training`` (the ``cpu`` preset the demo trains, and the
``paper`` preset) with random weights (speed does not depend on the weights), wrapped in the
inference ``Separator``; 30 s of stereo noise-like audio; chunks of 30 s with the default
context; activity weighting on (hard), once without and once with the Wiener post-filter.
RTF = processing time / audio duration (< 1 is faster than real time).
"""
from __future__ import annotations

import time

import numpy as np

SR = 44100
TARGETS = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]


def _separator(preset: str, hop: int = 1024):
    import torch

    from iass.training.inference import Separator
    from iass.training.presets import resolve_iass
    from iass.training.train import ModelSpec

    torch.manual_seed(0)
    cfg = resolve_iass({"preset": preset, "multi_target": True}, SR, hop)
    spec = ModelSpec("iass", cfg, TARGETS)
    return Separator(spec.build(), "iass", TARGETS, cfg, f"iass-{preset}", torch.device("cpu"))


def main(seconds: float = 30.0) -> dict:
    import torch

    from iass.evaluation.separate import SeparationConfig, separate

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    mixture = (0.1 * rng.standard_normal((int(seconds * SR), 2))).astype(np.float32)
    result = {"audio_seconds": seconds, "targets": len(TARGETS), "torch_threads": torch.get_num_threads()}
    for preset in ("cpu", "paper"):
        sep = _separator(preset)
        for wiener in (False, True):
            if preset == "paper" and wiener:
                continue
            cfg = SeparationConfig(weighting="hard", wiener=wiener, chunk_seconds=30.0)
            separate(mixture[: SR * 2], sep, cfg)            # warm-up
            t0 = time.perf_counter()
            separate(mixture, sep, cfg)
            wall = time.perf_counter() - t0
            key = f"rtf_{preset}" + ("_wiener" if wiener else "")
            result[key] = wall / seconds
    for k, v in result.items():
        print(f"{k}: {v}")
    return result


if __name__ == "__main__":
    main()
