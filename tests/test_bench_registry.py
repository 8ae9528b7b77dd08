"""python -m bench: which benches it runs (the device check too), and what it writes when a run is
cut short or the machine is loaded."""
from __future__ import annotations

import sys
import types

import bench.__main__ as bench_main


def test_make_bench_runs_every_bench_module_and_the_device_check():
    names = bench_main.default_names()
    assert "device" in names and "bench_model" in names and "bench_loader" in names
    assert names.index("device") == len(names) - 1


def test_results_are_written_after_each_bench_and_marked_partial_until_the_last(tmp_path, monkeypatch):
    seen = []

    def fake(name):
        if name == "bench_two":   # the first bench's section is on disk before the second runs
            seen.append((tmp_path / "r.md").read_text())
        return {"x": 1.5} if name == "bench_one" else "| a | b |\n|---|---|\n| 1 | 2 |"

    monkeypatch.setattr(bench_main, "run_bench", fake)
    monkeypatch.setattr(bench_main, "machine", lambda: {"cpu": "test", "cores": 2})
    assert bench_main.main(["one", "two", "--out", str(tmp_path / "r.md")]) == 0
    assert "PARTIAL: 1 of 2" in seen[0] and "| x | 1.5 |" in seen[0]
    final = (tmp_path / "r.md").read_text()
    assert "PARTIAL" not in final and "## bench_two (ok" in final and "| 1 | 2 |" in final
    assert "load average" in final


def test_loaded_note_names_a_load_above_the_cores(monkeypatch):
    monkeypatch.setattr(bench_main.os, "getloadavg", lambda: (9.0, 8.0, 7.0))
    assert "HEAVILY LOADED: 9.0 runnable processes for 2 cores" in bench_main.loaded_note(2)
    monkeypatch.setattr(bench_main.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert bench_main.loaded_note(2) == ""


def test_device_bench_returns_its_table(monkeypatch):
    from bench import device

    monkeypatch.setattr(device, "run", lambda quick=False, with_compile=True: ("| part |", []))
    assert device.bench() == "| part |"
    assert bench_main.OTHER_BENCHES["device"] == "bench.device"
    assert isinstance(sys.modules["bench.device"], types.ModuleType)
