"""Device check: what one machine gives the training and the separation, as one markdown table.

On a CUDA machine:
- the training step of the IASS paper preset and of Open-Unmix (hidden 512), batch 16 x 6 s
  chunks, in fp32 and bf16 (``train.precision``), eager and ``torch.compile`` (``train.compile``):
  ms/step, chunks/s, peak GPU memory;
- the corpus loader's chunks/s with the machine's cores as workers (bench_loader's corpus);
- one DistributedDataParallel step over NCCL (two processes) when there are two GPUs;
- the separation real-time factor (6 targets, 30 s, the paper preset, hard activity weighting).

Without CUDA (or with ``--quick``) it still runs to the end: every CUDA part is a row saying
why it was skipped, and the step timings, loader and separation run in a small CPU version (the
``cpu`` preset and Open-Unmix hidden 128 at batch 2 x 2 s; ``--quick``: the ``tiny`` preset,
batch 1 x 1 s, no compile), so the table shows this CPU's fp32 / bf16 / compile step times.

    python -m bench.device [--quick] [--out results.md] [--no-compile]

A compiled row's status also says how far its first loss is from the eager one on the same
weights and batch: compilation must not change the result (beyond float rounding).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SR, HOP = 44100, 1024
TARGETS6 = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]


@dataclass
class Row:
    part: str
    device: str
    setting: str
    time: str = "-"
    throughput: str = "-"
    memory: str = "-"
    status: str = "ok"


@dataclass
class Plan:
    """What to run where: the sizes of one mode (cuda | cpu | quick)."""

    name: str
    models: tuple[str, ...]
    batch: int
    chunk_s: float
    steps: int
    compile: bool
    loader_tracks: int
    loader_seconds: float
    loader_batches: int
    sep_preset: str
    sep_seconds: float
    precisions: tuple[str, ...] = ("fp32", "bf16")
    compile_precisions: tuple[str, ...] = ("fp32", "bf16")
    notes: list[str] = field(default_factory=list)


CUDA_PLAN = Plan("cuda", ("iass_paper", "umx_512"), 16, 6.0, 10, True, 24, 30.0, 12, "paper", 30.0)
# compiling on a CPU takes ~30-60 s a model: only the fp32 compile there
CPU_PLAN = Plan("cpu", ("iass_cpu", "umx_128"), 2, 2.0, 3, True, 6, 10.0, 4, "cpu", 4.0,
                compile_precisions=("fp32",))
QUICK_PLAN = Plan("quick", ("iass_tiny",), 1, 1.0, 2, False, 3, 4.0, 2, "cpu", 1.0)


# ---------------------------------------------------------------------------------- models
def build(name: str):
    """(model, n_fft, hop) of a bench model; the IASS paper/cpu presets take the six targets in
    one network (the demo's), Open-Unmix one network (the per-target cost)."""
    from iass.training.iass_model import build_iass
    from iass.training.presets import resolve_iass, resolve_umx
    from iass.training.umx import build_umx

    if name.startswith("iass_"):
        preset = name.split("_", 1)[1]
        hop = 256 if preset == "tiny" else HOP       # tiny's n_fft (512) is shorter than 1024
        cfg = resolve_iass({"preset": preset, "multi_target": True}, SR, hop)
        return build_iass(cfg, TARGETS6), cfg["n_fft"], hop
    if name.startswith("umx_"):
        cfg = resolve_umx({"hidden_size": int(name.split("_")[1])}, {"n_fft": 4096}, SR, HOP)
        return build_umx(cfg, ["vocals"]), cfg["n_fft"], HOP
    raise KeyError(name)


def describe(name: str) -> str:
    return {"iass_paper": "IASS paper preset, 6 targets", "iass_cpu": "IASS cpu preset, 6 targets",
            "iass_tiny": "IASS tiny preset, 6 targets", "umx_512": "Open-Unmix hidden 512, 1 target",
            "umx_128": "Open-Unmix hidden 128, 1 target"}.get(name, name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_timing(name: str, plan: Plan, device: torch.device, precision: str, compiled: bool,
                reference_loss: float | None = None) -> tuple[Row, float | None]:
    """ms/step of one training step (forward + loss under autocast for bf16, backward, Adam in
    fp32): the best of ``plan.steps`` after a warm-up step (compilation, cuDNN autotuning).
    Returns the row and the first step's loss (the eager fp32 one is the reference)."""
    from iass.training.precision import COMPILE_RTOL

    torch.manual_seed(0)
    model, n_fft, hop = build(name)
    model = model.to(device).train()
    frames = int(plan.chunk_s * SR) // hop + 1
    k = len(model.targets)
    gen = torch.Generator().manual_seed(0)
    mix = torch.rand(plan.batch, 2, n_fft // 2 + 1, frames, generator=gen).to(device)
    target = torch.rand(plan.batch, k, 2, n_fft // 2 + 1, frames, generator=gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    run = torch.compile(model) if compiled else model

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                est, logits = run(mix)
        else:
            est, logits = run(mix)
        loss = (est.float() - target).pow(2).mean()
        if logits is not None:
            loss = loss + logits.float().sigmoid().mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    setting = f"{describe(name)}, batch {plan.batch} x {plan.chunk_s:g} s, {precision}" + (
        ", compile" if compiled else "")
    part = "train step"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        first = step()                       # warm-up: compilation happens here
    except Exception as exc:  # a failing configuration is a row, the others still run
        reason = next((ln for ln in str(exc).splitlines() if ln.strip()), "")[:160]
        return Row(part, str(device), setting, status=f"FAILED: {type(exc).__name__}: {reason}"), None
    sync(device)
    warm = time.perf_counter() - t0
    best = float("inf")
    for _ in range(plan.steps):
        t = time.perf_counter()
        step()
        sync(device)
        best = min(best, time.perf_counter() - t)
    row = Row(part, str(device), setting, f"{best * 1e3:.1f} ms/step", f"{plan.batch / best:.2f} chunks/s")
    if device.type == "cuda":
        row.memory = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    notes, status = [], "ok"
    if compiled:
        notes.append(f"first step {warm:.1f} s incl. compilation")
    if reference_loss is not None:
        rel = abs(first - reference_loss) / abs(reference_loss)
        notes.append(f"first loss vs eager fp32: rel. {rel:.1e}")
        if compiled and rel > COMPILE_RTOL[precision]:  # what the trainer refuses
            status = "WRONG RESULT: compiled loss differs from eager (train.compile would refuse)"
    row.status = status + (f" ({'; '.join(notes)})" if notes else "")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, first


def train_steps(plan: Plan, device: torch.device, with_compile: bool) -> list[Row]:
    rows = []
    for name in plan.models:
        ref = None
        for compiled in ((False, True) if with_compile else (False,)):
            for precision in (plan.compile_precisions if compiled else plan.precisions):
                print(f"  step {name} {device} {precision}{' compile' if compiled else ''}", flush=True)
                row, loss = step_timing(name, plan, device, precision, compiled, ref)
                if ref is None and not compiled and precision == "fp32":
                    ref = loss
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- loader
def loader_rate(plan: Plan, workers: int) -> Row:
    """Chunks/s of the training loader (6-target chunks of ``plan.chunk_s``, the demo's draws)
    over a bench corpus in the real format, ``workers`` spawned processes."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from corpus_fixtures import FixtureTrack, write_fixture_corpus

    from bench.bench_loader import STEMS, rate
    from iass.training.data import ChunkConfig, StepBatchSampler, TrainChunks, loader_options

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        full = [(0.0, plan.loader_seconds)]
        tracks = [FixtureTrack(f"bench{i:02d}", "train", plan.loader_seconds, {s: full for s in STEMS})
                  for i in range(plan.loader_tracks)]
        tracks.append(FixtureTrack("benchv", "valid", plan.loader_seconds, {s: full for s in STEMS}))
        write_fixture_corpus(root, tracks, hop=HOP)
        cfg = ChunkConfig(targets=("vocals", "drums", "bass"), chunk_samples=int(plan.chunk_s * SR), hop=HOP)
        loader = torch.utils.data.DataLoader(
            TrainChunks(root, cfg), batch_sampler=StepBatchSampler(0, plan.loader_batches + 1, plan.batch),
            **loader_options(workers))
        chunks_s = rate(loader, plan.loader_batches)
    return Row("loader", "cpu", f"batch {plan.batch} x {plan.chunk_s:g} s, {workers} workers "
               f"({os.cpu_count()} cores)", throughput=f"{chunks_s:.1f} chunks/s")


# ------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, plan: Plan, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        torch.manual_seed(0)
        model, n_fft, hop = build(plan.models[0])
        model = DDP(model.to(device).train(), device_ids=[rank])
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        per_rank = max(1, plan.batch // world)
        frames = int(plan.chunk_s * SR) // hop + 1
        mix = torch.rand(per_rank, 2, n_fft // 2 + 1, frames, device=device)
        target = torch.rand(per_rank, len(TARGETS6), 2, n_fft // 2 + 1, frames, device=device)
        times = []
        for _ in range(4):
            torch.cuda.synchronize(device)
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            est, logits = model(mix)
            ((est - target).pow(2).mean() + logits.sigmoid().mean()).backward()
            opt.step()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
        if rank == 0:
            Path(out).write_text(f"{min(times[1:])}")
    finally:
        dist.destroy_process_group()


def ddp_step(plan: Plan) -> Row:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    setting = f"{describe(plan.models[0])}, global batch {plan.batch} x {plan.chunk_s:g} s, 2 ranks"
    if gpus < 2:
        return Row("DDP step (NCCL)", "cuda x2", setting,
                   status=f"skipped: needs 2 CUDA GPUs, this machine has {gpus}")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "ddp.txt")
        mp.spawn(_ddp_worker, args=(2, _free_port(), plan, out), nprocs=2, join=True)
        seconds = float(Path(out).read_text())
    return Row("DDP step (NCCL)", "cuda:0+cuda:1", setting, f"{seconds * 1e3:.1f} ms/step",
               f"{plan.batch / seconds:.2f} chunks/s")


# ------------------------------------------------------------------------------ separation
def separation_rtf(plan: Plan, device: torch.device) -> Row:
    """Real-time factor of the inference path (6 targets, hard activity weighting), random
    weights (speed does not depend on them)."""
    import numpy as np

    from iass.evaluation.separate import SeparationConfig, separate
    from iass.training.inference import Separator
    from iass.training.models import ModelSpec
    from iass.training.presets import resolve_iass

    torch.manual_seed(0)
    cfg = resolve_iass({"preset": plan.sep_preset, "multi_target": True}, SR, HOP)
    sep = Separator(ModelSpec("iass", cfg, TARGETS6).build().to(device), "iass", TARGETS6, cfg,
                    f"iass-{plan.sep_preset}", device)
    mixture = (0.1 * np.random.default_rng(0).standard_normal((int(plan.sep_seconds * SR), 2))).astype(np.float32)
    sc = SeparationConfig(weighting="hard", wiener=False, chunk_seconds=30.0)
    separate(mixture[: SR], sep, sc)          # warm-up
    sync(device)
    t0 = time.perf_counter()
    separate(mixture, sep, sc)
    sync(device)
    rtf = (time.perf_counter() - t0) / plan.sep_seconds
    return Row("separation", str(device), f"IASS {plan.sep_preset} preset, 6 targets, "
               f"{plan.sep_seconds:g} s of audio, hard weighting", f"RTF {rtf:.3f}", f"{1 / rtf:.1f}x real time")


# ------------------------------------------------------------------------------------ main
def table(rows: list[Row]) -> str:
    lines = ["| part | device | setting | time | throughput | peak GPU memory | status |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.part, r.device, r.setting, r.time, r.throughput, r.memory, r.status]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _guard(rows: list[Row], part: str, device: str, fn, *args) -> None:
    """Run one part; an exception becomes its row (the others still run)."""
    try:
        out = fn(*args)
        rows.extend(out if isinstance(out, list) else [out])
    except Exception as exc:
        traceback.print_exc()
        rows.append(Row(part, device, "-", status=f"FAILED: {type(exc).__name__}: {str(exc)[:160]}"))


def run(quick: bool = False, with_compile: bool = True) -> tuple[str, list[Row]]:
    rows: list[Row] = []
    cuda = torch.cuda.is_available()
    if not cuda:
        why = "skipped: no CUDA device (torch.cuda.is_available() is False" + (
            f"; torch {torch.__version__} is built without CUDA)" if torch.version.cuda is None else ")")
    elif quick:
        why = "skipped: --quick (the small CPU version only)"
    else:
        why = None
    if why is None:
        gpu = torch.cuda.get_device_name(0)
        print(f"CUDA: {gpu}", flush=True)
        dev = torch.device("cuda", 0)
        _guard(rows, "train step", str(dev), train_steps, CUDA_PLAN, dev, with_compile)
        _guard(rows, "loader", "cpu", loader_rate, CUDA_PLAN, min(os.cpu_count() or 1, 16))
        _guard(rows, "DDP step (NCCL)", "cuda x2", ddp_step, CUDA_PLAN)
        _guard(rows, "separation", str(dev), separation_rtf, CUDA_PLAN, dev)
        return table(rows), rows
    cp = CUDA_PLAN
    for model in cp.models:
        rows.append(Row("train step", "cuda", f"{describe(model)}, batch {cp.batch} x {cp.chunk_s:g} s, "
                        "fp32 / bf16, eager / compile", status=why))
    rows.append(Row("DDP step (NCCL)", "cuda x2", "2 ranks", status=why))
    rows.append(Row("separation", "cuda", f"IASS {cp.sep_preset} preset, 6 targets, {cp.sep_seconds:g} s",
                    status=why))
    plan = QUICK_PLAN if quick else CPU_PLAN
    cpu = torch.device("cpu")
    _guard(rows, "train step", "cpu", train_steps, plan, cpu, with_compile and plan.compile)
    if quick or not with_compile:
        rows.append(Row("train step", "cpu", "compile", status="skipped: " + (
            "--quick (compilation takes ~30 s per model)" if quick else "--no-compile")))
    workers = min(os.cpu_count() or 1, 2 if quick else 16)
    _guard(rows, "loader", "cpu", loader_rate, plan, workers)
    _guard(rows, "separation", "cpu", separation_rtf, plan, cpu)
    return table(rows), rows


def bench() -> str:
    """``python -m bench`` (``make bench``): the device check's table; on a CPU-only machine
    its CUDA parts are rows saying why they were skipped and the small CPU version runs. Without
    the CPU compile rows (30-60 s of compilation per model; ``python -m bench.device`` has them);
    on a CUDA machine with them."""
    text, _ = run(with_compile=torch.cuda.is_available())
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smallest CPU-only version (seconds)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--out", help="also write the table (with the machine line) to this file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from bench.__main__ import machine

    t0 = time.perf_counter()
    text, _ = run(quick=args.quick, with_compile=not args.no_compile)
    info = machine()
    if torch.cuda.is_available():
        info["gpus"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    header = ("# Device check (`python -m bench.device`)\n\nMachine: "
              + ", ".join(f"{k} {v}" for k, v in info.items())
              + f". Took {time.perf_counter() - t0:.0f} s.\n\n")
    print(header + text, flush=True)
    if args.out:
        Path(args.out).write_text(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
