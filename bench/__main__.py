"""Run every benchmark in bench/ and write bench/results.md (ratios, and the machine they ran on)."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name ("Intel(R) Xeon(R) ..."): ratios are only comparable on like machines.

    Linux's /proc/cpuinfo names it; elsewhere (or if unreadable) platform's processor/machine.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Processor", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels' ISA (AVX2/AVX512)
    }


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


#: benches outside the bench_*.py pattern: name -> module (its ``bench()`` returns a markdown table)
OTHER_BENCHES = {"device": "bench.device"}


def default_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py")) + sorted(OTHER_BENCHES)


def run_bench(name: str):
    """One bench: a bench_*.py module's ``main()`` (a dict of metrics), or an OTHER_BENCHES
    module's ``bench()`` (a markdown table)."""
    if name in OTHER_BENCHES:
        return importlib.import_module(OTHER_BENCHES[name]).bench()
    return importlib.import_module(f"bench.{name}").main()


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def cpu_counters() -> tuple[float, float, float] | None:
    """(machine busy CPU s, steal s, this process tree's CPU s) now, or None where /proc/stat is
    not there. Busy = user + nice + system + irq + softirq of every core; this process tree = this
    process and its reaped children (bench workers, subprocesses)."""
    import resource

    try:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / tick
    steal = (fields[7] if len(fields) > 7 else 0) / tick
    own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                resource.getrusage(resource.RUSAGE_CHILDREN)))
    return busy, steal, own


def loaded_note(cores, start, wall: float) -> str:
    """How much of the cores other processes (and the hypervisor, as steal) took while the
    benches ran: the machine's busy CPU time less this process tree's, over wall x cores. The
    load average cannot tell: it counts the benches' own workers. Above 25 %: HEAVILY LOADED,
    wall-clock timings and their ratios are then noisy."""
    now = cpu_counters()
    if not cores or start is None or now is None or wall <= 0:
        return ""
    others = max(0.0, (now[0] - start[0]) - (now[2] - start[2])) / (wall * cores)
    steal = (now[1] - start[1]) / (wall * cores)
    note = f"; other processes used {100 * others:.0f} % of the cores, steal {100 * steal:.0f} %"
    if others + steal > 0.25:
        note += ". HEAVILY LOADED: timings are noisy, see each bench's spread"
    return note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="bench names: bench_*.py modules and device (default: all)")
    parser.add_argument("--out", default=str(HERE / "results.md"))
    args = parser.parse_args(argv)
    names = args.names or default_names()
    sections, failed = [], 0
    load_before, counters, t_run = load_average(), cpu_counters(), time.perf_counter()
    t_start = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    info = machine()
    for i, name in enumerate(names):
        name = name if name.startswith("bench_") or name in OTHER_BENCHES else f"bench_{name}"
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = run_bench(name)
            status = "ok"
        except Exception:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            result, status, failed = {"error": traceback.format_exc(limit=3)}, "FAILED", failed + 1
        wall = time.perf_counter() - t0
        if isinstance(result, str):   # a bench with its own markdown table
            sections.append(f"## {name} ({status}, {wall:.1f} s)\n\n{result}\n")
        else:
            rows = "\n".join(f"| {k} | {fmt(v)} |" for k, v in (result or {}).items())
            sections.append(f"## {name} ({status}, {wall:.1f} s)\n\n| metric | value |\n|---|---|\n{rows}\n")
        # written after every bench: a run cut short still leaves what it measured, marked partial
        partial = "" if i == len(names) - 1 else (
            f"PARTIAL: {i + 1} of {len(names)} benches so far (still running, or stopped).\n\n")
        load = f"load average {load_before} at the start, {load_average()} at the end"
        header = (
            "# Benchmark results\n\nWritten by `make bench` (`python -m bench`). Ratios compare against a "
            "baseline measured in the same run on the same machine.\n\nMachine: "
            + ", ".join(f"{k} {v}" for k, v in info.items())
            + f"; {load}" + loaded_note(info.get("cores"), counters, time.perf_counter() - t_run)
            + f"\n\nRun at {t_start}.\n\n" + partial
        )
        Path(args.out).write_text(header + "\n".join(sections))
    print(f"wrote {args.out}; {len(names) - failed}/{len(names)} benchmarks ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
