"""Load, the small version run by `make test` (the full one: bench/bench_reliability.py, 1,000-track
build and a 10,000-chunk soak over 4 workers): a loader soak whose resident memory does not grow."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from corpus_fixtures import write_fixture_corpus

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_reliability.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_reliability", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_loader_soak_memory_does_not_grow(tmp_path):
    write_fixture_corpus(tmp_path / "corpus", hop=1024)
    bench = _bench()
    result = bench.soak(tmp_path / "corpus", chunks=2400, workers=2, batch=16, warmup=40,
                        targets=("vocals", "bass", "piano"))  # the fixture corpus' targets
    assert result["chunks"] == 2400
    # RSS of the main process and both workers, after warm-up vs at the last batch
    assert result["rss_growth"] < 0.10, result
