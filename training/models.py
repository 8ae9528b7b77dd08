"""The model factory: ``--model iass | umx`` and params.yaml ``model`` -> a network to train.

A :class:`ModelSpec` (kind, resolved configuration, targets) is what a checkpoint stores next to
the weights, so inference rebuilds exactly the network that was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from iass.errors import ConfigError

MODELS = ("iass", "umx")


@dataclass
class ModelSpec:
    kind: str
    config: dict[str, Any]
    targets: list[str]

    def build(self) -> torch.nn.Module:
        if self.kind == "iass":
            from iass.training.iass_model import build_iass

            return build_iass(self.config, self.targets)
        from iass.training.umx import build_umx

        return build_umx(self.config, self.targets)

    @property
    def activity_weight(self) -> float:
        return float(self.config.get("activity_weight", 0.0)) if self.kind == "iass" else 0.0

    @property
    def pitch_weight(self) -> float:
        """The pitch head's loss weight (0: no pitch head, the default)."""
        return float(self.config.get("pitch_weight", 0.0)) if self.kind == "iass" else 0.0


def resolve_spec(kind: str, params: dict, targets: list[str], sample_rate: int, hop: int) -> ModelSpec:
    from iass.training.presets import resolve_iass, resolve_umx

    model = params.get("model") or {}
    if kind == "iass":
        return ModelSpec(kind, resolve_iass(model.get("iass") or {}, sample_rate, hop), targets)
    if kind == "umx":
        return ModelSpec(kind, resolve_umx(model.get("umx") or {}, params.get("stft") or {},
                                           sample_rate, hop), targets)
    raise ConfigError(f"--model {kind!r}: expected one of {', '.join(MODELS)}")
