"""A run directory: everything needed to know, reproduce and resume a training run.

::

    <run_dir>/
      run.json            model, targets, resolved model config, corpus version, git commit +
                          dirty flag, library versions, seed, device, world size, command, status
      params.yaml         the resolved params (params.yaml + overrides + command-line options)
      checkpoints/last.pt full training state: model, optimizer, scheduler, early stopping
                          (:class:`EarlyStopping`, Open-Unmix's),
                          RNG states (python, numpy, torch), data position, history
      checkpoints/best.pt the model with the best validation loss (what inference loads)
      metrics.json        best/final losses, steps, epochs (``dvc metrics``)
      history.csv         one row per epoch (``dvc plots``)

Every file is written atomically (iass/io.py), so a killed run never leaves a torn checkpoint.
"""
from __future__ import annotations

import csv
import io
import json
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from iass import REPO_ROOT
from iass.errors import RunError
from iass.io import atomic_path, atomic_write_json, atomic_write_text

RUN_FILE = "run.json"
PARAMS_FILE = "params.yaml"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"

LIBRARIES = ("torch", "numpy", "openunmix", "polars", "pyarrow", "soundfile", "scipy", "iass")


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the code that runs (``unknown`` outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": dirty}


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["torch_build"] = torch.__version__
    out["cuda"] = torch.version.cuda or "none"
    return out


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def exists(self) -> bool:
        return self.path(RUN_FILE).exists()

    def read_run(self) -> dict[str, Any]:
        try:
            return json.loads(self.path(RUN_FILE).read_text())
        except FileNotFoundError:
            raise RunError(f"{self.path(RUN_FILE)}: not a training run directory (no run.json)") from None

    def write_run(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.path(RUN_FILE), info)

    def write_params(self, params: dict[str, Any]) -> None:
        atomic_write_text(self.path(PARAMS_FILE), yaml.safe_dump(params, sort_keys=False))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.path(METRICS_FILE), metrics)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        if not history:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(history[0]), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.path(HISTORY_FILE), buf.getvalue())

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> None:
        with atomic_path(self.path(name)) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, name: str, map_location="cpu") -> dict[str, Any]:
        path = self.path(name)
        if not path.exists():
            raise RunError(f"{path}: no checkpoint to load")
        # weights_only=False: the state holds RNG states and plain python objects we wrote
        return torch.load(path, map_location=map_location, weights_only=False)


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the kernel (CPU training only).

    Each step allocates the same large spectrogram tensors (~100-200 MB at batch 8); by default
    glibc serves them with mmap and unmaps them on free, so every step page-faults them in again
    (measured: 1.7 s of kernel time per 5 s step). With mmap off and no trimming, the heap is
    reused: kernel time ~0.1 s per step. Returns False where this is not glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False


class EarlyStopping:
    """Open-Unmix's ``utils.EarlyStopping`` (mode min, min_delta 0), with a state dict."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best: float | None = None
        self.num_bad_epochs = 0

    def step(self, value: float) -> bool:
        if self.best is None:
            self.best = value
            return False
        if np.isnan(value):
            return True
        if self.patience == 0 or value < self.best:
            self.num_bad_epochs = 0
            self.best = value
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs, "patience": self.patience}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.num_bad_epochs = state["best"], state["num_bad_epochs"]
