"""iass: instrument-activation-aware source separation on a versioned multitrack corpus.

One importable package; the monorepo folders are its subpackages:
``pipelines/`` -> ``iass.pipelines`` (sources, taxonomy, activity labels, corpus build, synthesis),
``training/`` -> ``iass.training``, ``evaluation/`` -> ``iass.evaluation``.
``datasets/`` is data (the registry and the DVC-tracked corpus), never a package.
"""
from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

# Bit-reproducible training on CPU with several threads: without it, MKL picks its code path by
# the memory alignment of each buffer, and two identical Open-Unmix runs with 2 threads ended with
# different weights (valid loss 9.57 vs 9.73 after 20 steps); with it they are identical, at the
# same speed. MKL reads it when it first runs, so it is set here, before anything imports torch
# (import iass before torch in your own scripts, or export MKL_CBWR yourself).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

#: The repository root (where ``datasets/``, ``params.yaml`` and ``dvc.yaml`` live).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The declarative dataset registry.
REGISTRY_DIR = Path(os.environ.get("IASS_REGISTRY", REPO_ROOT / "datasets"))
