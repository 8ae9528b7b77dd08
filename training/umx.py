"""The Open-Unmix baseline: ``openunmix.model.OpenUnmix`` itself, random init, one per target.

``openunmix`` 1.3.0 imports ``torchaudio`` at import time although ``OpenUnmix`` never uses it,
and no torchaudio that loads beside our CPU torch exists in the registry. :func:`import_openunmix`
imports the real package with a stand-in ``torchaudio`` (``_torchaudio_shim``) present in
``sys.modules`` only during that import, unless a working torchaudio is installed (then the real
one is used). The model class is Open-Unmix's own, not a copy: ``tests/test_umx.py`` proves it
(same state-dict keys and shapes, same output for the same weights).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

import torch
import torch.nn as nn

_LOCK = threading.Lock()


def _torchaudio_loads() -> bool:
    if importlib.util.find_spec("torchaudio") is None:
        return False
    try:
        importlib.import_module("torchaudio")
        return True
    except (ImportError, OSError):  # e.g. a CUDA build beside CPU torch: libc10_cuda.so
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        return False


def import_openunmix() -> ModuleType:
    """Import and return the ``openunmix`` package (with ``model``, ``utils``, ``data`` loaded)."""
    with _LOCK:
        if "openunmix.model" in sys.modules and "openunmix.data" in sys.modules:
            return sys.modules["openunmix"]
        if _torchaudio_loads():
            for mod in ("openunmix", "openunmix.model", "openunmix.utils", "openunmix.data"):
                importlib.import_module(mod)
            return sys.modules["openunmix"]
        from iass.training import _torchaudio_shim

        sys.modules["torchaudio"] = _torchaudio_shim
        try:
            for mod in ("openunmix", "openunmix.model", "openunmix.utils", "openunmix.data"):
                importlib.import_module(mod)
        finally:
            # only openunmix's modules keep a reference (their global ``torchaudio`` name)
            if sys.modules.get("torchaudio") is _torchaudio_shim:
                del sys.modules["torchaudio"]
        return sys.modules["openunmix"]


def open_unmix_class():
    return import_openunmix().model.OpenUnmix


class UMXModel(nn.Module):
    """One ``openunmix.model.OpenUnmix`` per target, trained side by side on the same batches
    (each target's network only receives its own target's loss, as separate runs would)."""

    def __init__(self, targets: list[str], cfg: dict):
        super().__init__()
        OpenUnmix = open_unmix_class()
        self.targets = list(targets)
        self.nb_channels = int(cfg["nb_channels"])
        self.models = nn.ModuleDict({
            t: OpenUnmix(
                nb_bins=int(cfg["n_fft"]) // 2 + 1,
                nb_channels=self.nb_channels,
                hidden_size=int(cfg["hidden_size"]),
                nb_layers=int(cfg["nb_layers"]),
                unidirectional=bool(cfg["unidirectional"]),
                max_bin=int(cfg["max_bin"]),
            )
            for t in self.targets
        })

    def set_input_statistics(self, mean, scale) -> None:
        """Open-Unmix's convention (its constructor's): ``input_mean = -mean``, ``input_scale = 1/std``."""
        mean = torch.as_tensor(mean, dtype=torch.float32)
        scale = torch.as_tensor(scale, dtype=torch.float32)
        with torch.no_grad():
            for m in self.models.values():
                m.input_mean.copy_(-mean[: m.nb_bins])
                m.input_scale.copy_(1.0 / scale[: m.nb_bins])

    def forward(self, mix_mag: torch.Tensor) -> tuple[torch.Tensor, None]:
        """mix_mag (B, C, F, T) -> estimates (B, K, C, F, T); Open-Unmix has no activity output."""
        x = mix_mag if self.nb_channels == mix_mag.shape[1] else mix_mag.mean(1, keepdim=True)
        return torch.stack([self.models[t](x) for t in self.targets], 1), None


def build_umx(cfg: dict, targets: list[str]) -> UMXModel:
    return UMXModel(targets, cfg)
