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

#: The repository root (where ``datasets/``, ``params.yaml`` and ``dvc.yaml`` live).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The declarative dataset registry.
REGISTRY_DIR = Path(os.environ.get("IASS_REGISTRY", REPO_ROOT / "datasets"))
