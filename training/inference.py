"""A trained run as a mask estimator: what evaluation and ``iass separate`` build on.

    sep = load_separator("runs/iass")                 # best checkpoint, CPU
    mag = magnitude(mixture, sep.n_fft, sep.hop)      # (2, F, T): torch.stft, Hann, center=True
    mask, logits = sep.masks(mag)                     # (K, 2, F, T) >= 0, (K, T) or None
    estimate_mag = mask * mag                         # per target

IASS: the network sees the mono (channel-averaged) magnitude and gives one mask per target,
used for both channels, plus an activity logit per frame. Open-Unmix: one network per target
estimates each channel's magnitude; its mask is ``estimate / (mixture + eps)``.

A run trained with a pitch head (``model.iass.pitch_weight`` > 0) has ``has_pitch`` True, and
``sep.outputs(mag)`` gives the pitch logits (K, T, 88) beside the mask and activity logits
(keys MIDI 21..108).
"""
from __future__ import annotations

from pathlib import Path

import torch

from iass.errors import RunError
from iass.training import run as runlib
from iass.training.models import ModelSpec

EPS = 1e-10


class Separator:
    """Loaded from a run directory; see :func:`load_separator`."""

    def __init__(self, model: torch.nn.Module, kind: str, targets: list[str], config: dict,
                 name: str, device: torch.device):
        self.model = model.eval()
        self.kind = kind
        self.targets: list[str] = list(targets)
        self.config = dict(config)
        self.sample_rate: int = int(config["sample_rate"])
        self.n_fft: int = int(config["n_fft"])
        self.hop: int = int(config["hop"])
        self.has_activity: bool = kind == "iass"
        self.has_pitch: bool = bool(getattr(model, "has_pitch", False))
        self.name: str = name
        self.device = device

    def __repr__(self) -> str:
        return (f"Separator({self.name!r}, {self.kind}, targets={self.targets}, n_fft={self.n_fft}, "
                f"hop={self.hop})")

    def masks(self, mixture_mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """mixture_mag: (2, n_fft // 2 + 1, T) magnitude of the stereo mixture.

        Returns mask (n_targets, 2, F, T) >= 0 (estimate magnitude = mask x mixture magnitude)
        and activity logits (n_targets, T), or None for a model without activity."""
        mask, logits, _ = self._outputs(mixture_mag, pitch=False)
        return mask, logits

    def outputs(self, mixture_mag: torch.Tensor):
        """:meth:`masks` and the pitch head's logits (n_targets, T, 88), or None for a model
        without a pitch head: one pass of the network."""
        return self._outputs(mixture_mag, pitch=self.has_pitch)

    @torch.no_grad()
    def _outputs(self, mixture_mag: torch.Tensor, pitch: bool):
        if mixture_mag.dim() != 3 or mixture_mag.shape[1] != self.n_fft // 2 + 1:
            raise ValueError(f"{self.name}: expected a (channels, {self.n_fft // 2 + 1}, frames) "
                             f"magnitude, got {tuple(mixture_mag.shape)}")
        out_device = mixture_mag.device
        mag = mixture_mag.to(self.device, torch.float32)[None]
        if self.kind == "iass":
            if pitch:
                mask, logits, p = self.model.outputs(mag)             # ..., (1, K, T, 88)
                p = p[0].to(out_device)
            else:
                mask, logits = self.model.masks(mag)                  # (1, K, F, T), (1, K, T)
                p = None
            mask = mask[0, :, None].expand(-1, mag.shape[1], -1, -1)
            return mask.to(out_device), logits[0].to(out_device), p
        estimate, *_ = self.model(mag)                                # (1, K, C, F, T)
        mask = estimate[0] / (mag + EPS)
        return mask.to(out_device), None, None


def load_separator(run_dir, device="cpu", checkpoint: str = "best") -> Separator:
    """The run's model with the weights of ``checkpoint`` (best | last | a path to a .pt)."""
    run = runlib.RunDir(run_dir)
    name = {"best": runlib.BEST, "last": runlib.LAST}.get(checkpoint)
    if name is not None:
        state = run.load_checkpoint(name, map_location="cpu")
    else:
        path = Path(checkpoint)
        if not path.exists():
            raise RunError(f"{path}: no such checkpoint (expected best, last or a .pt path)")
        state = torch.load(path, map_location="cpu", weights_only=False)
    if "weights" not in state:
        raise RunError(f"{run.root}: checkpoint {checkpoint!r} holds no model weights")
    spec = ModelSpec(state["kind"], state["model_config"], list(state["targets"]))
    model = spec.build()
    model.load_state_dict(state["weights"])
    device = torch.device(device)
    if spec.kind == "iass":
        from iass.training.iass_model import optimize_for_inference

        model = optimize_for_inference(model)   # BN folded, channels-last: ~2x faster on CPU
    return Separator(model.to(device), spec.kind, spec.targets, spec.config,
                     Path(run_dir).resolve().name, device)
