"""python -m bench: which benches it runs (the device check too), and what it writes when a run is
cut short or the machine is loaded."""
from __future__ import annotations

import sys
import time
import types

import pytest

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


def test_loaded_note_counts_the_cpu_of_other_processes(monkeypatch):
    """Others' share = machine busy CPU less this process tree's, over wall x cores (the benches'
    own workers do not count as load, as they did in the load average)."""
    start = (100.0, 0.0, 10.0)            # (machine busy s, steal s, our CPU s)
    monkeypatch.setattr(bench_main, "cpu_counters", lambda: (116.0, 0.0, 25.0))
    note = bench_main.loaded_note(2, start, 10.0)   # 16 s busy, 15 ours, over 20 core-seconds
    assert "other processes used 5 % of the cores, steal 0 %" in note and "HEAVILY" not in note
    monkeypatch.setattr(bench_main, "cpu_counters", lambda: (130.0, 1.0, 25.0))
    note = bench_main.loaded_note(2, start, 10.0)
    assert "other processes used 75 % of the cores, steal 5 %" in note and "HEAVILY LOADED" in note
    assert bench_main.loaded_note(2, None, 10.0) == ""


def test_cpu_counters_see_this_process_work():
    a = bench_main.cpu_counters()
    if a is None:
        pytest.skip("no /proc/stat on this machine")
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    b = bench_main.cpu_counters()
    assert b[2] - a[2] >= 0.29 and b[0] - a[0] >= 0.25   # ours, and in the machine's busy time


def test_device_bench_returns_its_table(monkeypatch):
    from bench import device

    monkeypatch.setattr(device, "run", lambda quick=False, with_compile=True: ("| part |", []))
    assert device.bench() == "| part |"
    assert bench_main.OTHER_BENCHES["device"] == "bench.device"
    assert isinstance(sys.modules["bench.device"], types.ModuleType)
