"""The package layout: folders map into ``iass`` in a way static tools can follow, and no generic
top-level module leaks into the environment (docs/development.md)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

from iass import REPO_ROOT

SUBPACKAGES = {"iass.pipelines": "pipelines", "iass.training": "training",
               "iass.evaluation": "evaluation", "iass.pipelines.sources": "pipelines/sources",
               "iass.pipelines.synth": "pipelines/synth"}


@pytest.mark.parametrize("name, folder", sorted(SUBPACKAGES.items()))
def test_subpackage_is_the_folder_and_reachable_through_sys_path(name, folder):
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    # the interpreter loads the folder's own file (through a link in strict editable mode)
    assert Path(spec.origin).resolve() == (REPO_ROOT / folder / "__init__.py").resolve()
    # what pyright / jedi need: a sys.path folder holding iass/<...>/__init__.py, not an import hook
    rel = Path(*name.split(".")) / "__init__.py"
    holders = [p for p in sys.path if p and (Path(p) / rel).is_file()]
    if not holders:
        pytest.fail(f"{name} is importable only through an import hook: static tools cannot resolve "
                    f"it; install with `make setup` (editable_mode=strict, docs/development.md)")
    assert (Path(holders[0]) / rel).resolve() == (REPO_ROOT / folder / "__init__.py").resolve()


@pytest.mark.parametrize("name", ["pipelines", "training", "evaluation", "datasets"])
def test_no_generic_top_level_module(name):
    # the working directory is on sys.path under `python -m pytest` (as in any shell started in
    # the checkout); what is installed must not add the repository root on top of that
    installed = [p for p in sys.path
                 if p and Path(p).resolve() != REPO_ROOT.resolve() and Path(p).resolve() != Path.cwd().resolve()]
    spec = importlib.machinery.PathFinder.find_spec(name, installed)
    if spec is not None:  # another installed distribution may own the name: it must not be ours
        where = spec.origin or next(iter(spec.submodule_search_locations or []), "")
        assert REPO_ROOT.resolve() not in Path(where).resolve().parents, \
            f"top-level {name!r} resolves into the repository: {where}"


def test_subpackages_import_from_the_checkout_root():
    """`python -m pytest` / `python -c` in the checkout put it first on sys.path, so `iass` is the
    folder itself there: its links iass/pipelines -> ../pipelines (etc.) must resolve."""
    import subprocess

    code = ("import iass, iass.pipelines.build, iass.training.train, iass.evaluation.metrics; "
            "print(iass.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == (REPO_ROOT / "iass" / "__init__.py").resolve()
