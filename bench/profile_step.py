"""Where an IASS training step's time goes: every convolution and matrix product of the network,
forward + backward alone on the shape and memory layout it has in the step, against the
machine's matmul peak; then the whole step, and what is left for everything else (BatchNorm,
activations, the mask, the loss, Adam).

    python -m bench.profile_step                    # paper preset, batch 2
    python -m bench.profile_step --model iass_cpu_6 --batch 4

The products are recorded from one training-mode forward (a ``TorchDispatchMode`` sees each
``aten.convolution`` / ``addmm`` / ``mm`` with its arguments, whichever module or function called
it) and replayed one by one, so a product computed outside ``nn.Conv2d`` is counted too. Timed
alone, a product finds its operands warmer in cache than inside the step, so the products' sum
is on the short side and the "rest" (the step less that sum) an upper bound. Each time is the best of 4 after a warm-up; FLOPs as bench_model counts them.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten
PRODUCTS = (aten.convolution.default, aten.addmm.default, aten.mm.default)


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in PRODUCTS:
            # requires_grad as autograd left it: the replay computes the same gradients
            self.calls.append((func, tree_map(
                lambda t: t.detach().clone().requires_grad_(t.requires_grad)
                if isinstance(t, torch.Tensor) else t, args)))
        return out


def _describe(func, args) -> str:
    if func is aten.convolution.default:
        x, w = args[0], args[1]
        kind = "conv_t" if args[6] else "conv"
        groups = f" g{args[8]}" if args[8] != 1 else ""
        return (f"{kind} {x.shape[1]}->{w.shape[1] * args[8] if args[6] else w.shape[0]} "
                f"k{tuple(w.shape[2:])} s{tuple(args[3])}{groups} on {tuple(x.shape)}")
    a, b = (args[1], args[2]) if func is aten.addmm.default else (args[0], args[1])
    return f"{func._opname} {tuple(a.shape)} @ {tuple(b.shape)}"


def _replay(func, args, reps: int = 4) -> tuple[float, float]:
    """(best seconds, FLOPs) of forward + backward of one recorded product."""
    from bench.bench_model import flops, timed

    def run():
        out = func(*args)
        if out.requires_grad:
            out.backward(torch.ones_like(out))

    return timed(run, reps)[0], flops(run)


def record(model: torch.nn.Module, mix: torch.Tensor) -> list[tuple]:
    """(op, arguments) of every convolution and matrix product of one training-mode forward."""
    recorder = _Recorder()
    model.train()
    with recorder:
        model(mix)
    return recorder.calls


def profile(name: str, batch: int, top: int = 15) -> dict:
    from bench.bench_model import flops, matmul_peaks, setup, timed

    peak = matmul_peaks()["matmul_peak_gflops"]
    model, mix, _, step = setup(name, batch)
    rows = []
    for func, args in record(model, mix):
        t, fl = _replay(func, args)
        rows.append((t, fl, _describe(func, args)))
    step_s, _ = timed(step, reps=4)
    step_flops = flops(step)
    products_s = sum(r[0] for r in rows)
    products_flops = sum(r[1] for r in rows)
    print(f"{name}, batch {batch}, {torch.get_num_threads()} threads; matmul peak {peak:.0f} GFLOP/s")
    print(f"{'ms':>7} {'GFLOP':>7} {'of peak':>7}  product (forward + backward, alone)")
    rows.sort(reverse=True)
    for t, fl, what in rows[:top]:
        print(f"{t * 1e3:7.1f} {fl / 1e9:7.2f} {fl / t / 1e9 / peak:7.2f}  {what}")
    if len(rows) > top:
        rest = rows[top:]
        print(f"{sum(r[0] for r in rest) * 1e3:7.1f} {sum(r[1] for r in rest) / 1e9:7.2f} "
              f"{'':>7}  {len(rest)} more")
    out = {
        "peak_gflops": peak, "step_s": step_s, "step_gflop": step_flops / 1e9,
        "step_peak_fraction": step_flops / step_s / 1e9 / peak,
        "products": len(rows), "products_s": products_s, "products_gflop": products_flops / 1e9,
        "products_peak_fraction": products_flops / products_s / 1e9 / peak,
        "rest_s": step_s - products_s,
    }
    print(f"step {step_s * 1e3:.1f} ms, {step_flops / 1e9:.1f} GFLOP, {out['step_peak_fraction']:.2f} of peak; "
          f"its {len(rows)} products alone {products_s * 1e3:.1f} ms ({out['products_peak_fraction']:.2f} of "
          f"peak); the rest (BatchNorm, activations, mask, loss, Adam) {out['rest_s'] * 1e3:.1f} ms")
    return out


def main(argv=None) -> int:
    from iass.training.run import keep_freed_memory

    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="iass_paper", choices=["iass_paper", "iass_cpu_6"])
    parser.add_argument("--batch", type=int, default=None, help="chunks per step (paper 2, cpu 4)")
    parser.add_argument("--top", type=int, default=15, help="products listed one by one")
    args = parser.parse_args(argv)
    keep_freed_memory()   # as the trainer and bench_model do
    if hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    profile(args.model, args.batch or (2 if args.model == "iass_paper" else 4), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
