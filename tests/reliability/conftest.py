"""Fixtures of the reliability suite (helpers: _reliability.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import _reliability  # noqa: F401 - the suite's helpers, importable from every test module

# pytest registers every directory's conftest.py as the module `conftest`, so once this one is
# loaded, `from conftest import make_audio` elsewhere (tests/source_fixtures.py) would find this
# file: re-export the top conftest's helpers so such imports keep working in any order.
_spec = importlib.util.spec_from_file_location("_iass_tests_conftest",
                                               Path(__file__).resolve().parents[1] / "conftest.py")
_top = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_top)
make_audio, write_wav, SHARED_DATA = _top.make_audio, _top.write_wav, _top.SHARED_DATA


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect server for the whole suite; its URL lets CLI subprocesses report to
    it instead of each starting its own (~15 s each)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):   # a loaded 2-core machine starts it slowly
        yield PREFECT_API_URL.value()


