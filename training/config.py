"""The training knobs: params.yaml's ``train`` section as one dataclass, :class:`TrainConfig`.

Every default of a training knob is written once, here (a params file that leaves a key out gets
it); :func:`resolve_train_params` is the one place where the ``train`` section and the command
line's overrides (``--targets``, ``--max-steps``, ``--device``) become the params the run records
(``<run_dir>/params.yaml``) and the :class:`TrainConfig` it trains with. A bad value fails here,
before any data is read, with a :class:`~iass.errors.ConfigError` naming the key.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Callable

from iass.errors import ConfigError

log = logging.getLogger(__name__)

TARGET_TRACKS = ("known", "present")
TARGET_OFFSETS = ("uniform", "active")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")              # fp32: no autocast; bf16: torch.autocast(bfloat16)

#: what a resumed run may change (the budget and where and how fast it runs); the rest of the
#: ``train`` section is part of the run's identity. ``compile`` is here like ``device``: the same
#: computation by other kernels (float-rounding differences only); ``precision`` is not: bf16
#: rounds every matmul and convolution, a different computation.
RESUME_MAY_CHANGE = ("max_steps", "epochs", "device", "workers", "threads", "compile")


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml ``train``; see the comments there for what each knob does."""

    targets: tuple[str, ...] = ()          # none here: params.yaml or --targets must name them
    seed: int = 42
    chunk_seconds: float = 6.0             # Open-Unmix's
    batch_size: int = 16                   # Open-Unmix's
    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_decay_patience: int = 80            # ReduceLROnPlateau, epochs
    lr_decay_gamma: float = 0.3
    patience: int = 140                    # early stopping, epochs without improvement
    epochs: int = 1000
    max_steps: int | None = None           # None (or 0 in params.yaml): epochs decide
    steps_per_epoch: int = 50              # optimizer steps between two validations
    valid_chunks_per_track: int = 2
    stats_examples: int = 32               # 0: no input statistics
    workers: int = 0                       # data-loading processes (0: the main process)
    threads: int = 0                       # torch intra-op threads (0: torch's default)
    random_track_mix: bool = True
    target_tracks: str = "known"           # TARGET_TRACKS
    target_offsets: str = "uniform"        # TARGET_OFFSETS
    gain: tuple[float, float] = (1.0, 1.0)  # random source gain range; absent: no random gain
    channel_swap: bool = True
    device: str = "auto"                   # DEVICES
    precision: str = "fp32"                # PRECISIONS: autocast of the forward and loss
    compile: bool = False                  # torch.compile the model (CPU: needs a C++ compiler)

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"params.yaml train.{key}: {getattr(self, key)!r}, {what}")

        need(self.target_tracks in TARGET_TRACKS, "target_tracks", f"expected one of {', '.join(TARGET_TRACKS)}")
        need(self.target_offsets in TARGET_OFFSETS, "target_offsets",
             f"expected one of {', '.join(TARGET_OFFSETS)}")
        need(self.device.lower() in DEVICES, "device", f"expected one of {', '.join(DEVICES)}")
        need(self.precision in PRECISIONS, "precision", f"expected one of {', '.join(PRECISIONS)}")
        for key in ("batch_size", "steps_per_epoch", "epochs", "valid_chunks_per_track"):
            need(getattr(self, key) >= 1, key, "expected at least 1")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps", "expected at least 1 (or 0: no cap)")
        need(self.chunk_seconds > 0, "chunk_seconds", "expected a positive duration")
        need(self.stats_examples >= 0, "stats_examples", "expected 0 or more")

    # -------------------------------------------------------------------------- construction
    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> "TrainConfig":
        """From a params ``train`` section; a key left out (or null) takes the default above."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        for key in sorted(set(section) - known):
            log.debug("params.yaml train.%s: not a training knob (ignored)", key)
        values = {}
        for key, convert in _CONVERTERS.items():
            value = section.get(key)
            if value is None:
                continue
            try:
                out = convert(value)
            except (TypeError, ValueError, IndexError):
                raise ConfigError(f"params.yaml train.{key}: {value!r} is not a valid value") from None
            if out is not None:
                values[key] = out
        return cls(**values)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "TrainConfig":
        return cls.from_section(params.get("train"))

    def chunk_config(self, targets, hop: int, sample_rate: int, pitch: bool = False):
        """The training data's :class:`~iass.training.data.ChunkConfig` (chunks of
        ``chunk_seconds``, the augmentations and draws of this config); ``pitch``: the examples
        also carry the targets' piano rolls (a model with a pitch head)."""
        from iass.training.data import ChunkConfig

        return ChunkConfig(
            **({"pitch": True} if pitch else {}),
            targets=tuple(targets),
            chunk_samples=int(round(float(self.chunk_seconds) * sample_rate)),
            hop=int(hop),
            seed=self.seed,
            random_track_mix=self.random_track_mix,
            gain=self.gain,
            channel_swap=self.channel_swap,
            target_tracks=self.target_tracks,
            target_offsets=self.target_offsets,
        )

    def last_step(self) -> int:
        """The step the run ends at unless early stopping comes first."""
        last = self.epochs * self.steps_per_epoch
        return min(last, self.max_steps) if self.max_steps else last

    def stop_reason(self) -> str:
        """Why the run ends when it reaches :meth:`last_step`."""
        return "max_steps" if self.max_steps and self.last_step() == self.max_steps else "epochs"


def _gain(value) -> tuple[float, float] | None:
    if not value:                          # [] like null: the default (no random gain)
        return None
    return float(value[0]), float(value[1])


def _max_steps(value) -> int | None:
    return int(value or 0) or None


def _flag(value) -> bool:
    """A YAML boolean (or the strings true/false); anything else is not a valid value."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(value)


#: how each key of the section is read (a missing key keeps the dataclass default)
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "targets": lambda v: tuple(str(t) for t in v),
    "seed": int, "chunk_seconds": float, "batch_size": int, "lr": float, "weight_decay": float,
    "lr_decay_patience": int, "lr_decay_gamma": float, "patience": int, "epochs": int,
    "max_steps": _max_steps, "steps_per_epoch": int, "valid_chunks_per_track": int,
    "stats_examples": int, "workers": int, "threads": lambda v: int(v or 0),
    "random_track_mix": bool, "target_tracks": str, "target_offsets": str, "gain": _gain,
    "channel_swap": bool, "device": str, "precision": lambda v: str(v).strip().lower(),
    "compile": _flag,
}


def resolve_train_params(params: dict[str, Any], *, targets=None, max_steps=None,
                         device=None) -> tuple[dict[str, Any], TrainConfig]:
    """The params a run records (a copy of ``params`` with the command line's overrides written
    into its ``train`` section) and the :class:`TrainConfig` built from them."""
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    params["train"] = dict(params.get("train") or {})
    if targets:
        params["train"]["targets"] = list(targets)
    if max_steps is not None:
        params["train"]["max_steps"] = int(max_steps)
    if device is not None:
        params["train"]["device"] = device
    return params, TrainConfig.from_params(params)
