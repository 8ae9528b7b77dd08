"""Model cost: IASS (paper and CPU presets) vs Open-Unmix, forward and training-step time on 6 s
chunks, parameter counts, FLOPs (torch's FlopCounterMode) and achieved GFLOP/s as a fraction of
this machine's float32 matmul peak measured in the same process.

    python -m bench model            # or: python bench/bench_model.py
"""
from __future__ import annotations

import copy
import sys
import time

import torch

CHUNK_FRAMES = 6 * 44100 // 1024 + 1   # 6 s at hop 1024, center=True: 259 frames
TARGETS6 = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]


def matmul_peak(n: int = 2048, reps: int = 6) -> float:
    """Best float32 GFLOP/s of an n x n matmul (the reference for 'fraction of peak')."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def timed(fn, reps: int = 2) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def build(name: str):
    from iass.training.iass_model import build_iass
    from iass.training.presets import resolve_iass, resolve_umx
    from iass.training.umx import build_umx

    if name == "iass_paper":     # the paper: one network per target
        cfg = resolve_iass({"preset": "paper", "multi_target": False}, 44100, 1024)
        return build_iass(cfg, ["vocals"]), cfg["n_fft"]
    if name == "iass_cpu_6":     # the demo: one multi-target network for the six targets
        cfg = resolve_iass({"preset": "cpu", "multi_target": True}, 44100, 1024)
        return build_iass(cfg, TARGETS6), cfg["n_fft"]
    if name == "umx_512":        # Open-Unmix's default, one target
        cfg = resolve_umx({"hidden_size": 512}, {"n_fft": 4096}, 44100, 1024)
        return build_umx(cfg, ["vocals"]), cfg["n_fft"]
    if name == "umx_128_6":      # the demo's baseline: six Open-Unmix networks, hidden 128
        cfg = resolve_umx({"hidden_size": 128}, {"n_fft": 4096}, 44100, 1024)
        return build_umx(cfg, TARGETS6), cfg["n_fft"]
    raise KeyError(name)


def measure(name: str, batch: int, peak: float) -> dict:
    from iass.training.iass_model import optimize_for_inference

    torch.manual_seed(0)
    model, n_fft = build(name)
    k = len(model.targets)
    mix = torch.rand(batch, 2, n_fft // 2 + 1, CHUNK_FRAMES)
    target = torch.rand(batch, k, 2, n_fft // 2 + 1, CHUNK_FRAMES)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def forward():
        with torch.no_grad():
            model.eval()(mix)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        est, logits = model(mix)
        loss = (est - target).pow(2).mean() + (logits.mean() if logits is not None else 0)
        loss.backward()
        opt.step()

    out = {"params": sum(p.numel() for p in model.parameters()), "batch": batch}
    fwd_flops, step_flops = flops(forward), flops(step)
    t_fwd, t_step = timed(forward), timed(step)
    out.update({
        "forward_gflop_per_chunk": fwd_flops / batch / 1e9,
        "forward_s": t_fwd, "forward_gflops": fwd_flops / t_fwd / 1e9,
        "train_step_s": t_step, "train_step_gflops": step_flops / t_step / 1e9,
    })
    out["forward_peak_fraction"] = out["forward_gflops"] / peak
    out["train_step_peak_fraction"] = out["train_step_gflops"] / peak
    if name.startswith("iass"):  # eval path used by inference: BN folded + channels-last
        fast = optimize_for_inference(copy.deepcopy(model))

        def forward_fast():
            with torch.no_grad():
                fast(mix)

        t_fast = timed(forward_fast)
        out.update({"forward_optimized_s": t_fast, "forward_optimized_gflops": fwd_flops / t_fast / 1e9,
                    "forward_optimized_peak_fraction": fwd_flops / t_fast / 1e9 / peak})
    return out


def main() -> dict:
    peak = matmul_peak()
    results: dict = {"matmul_peak_gflops": peak, "torch_threads": torch.get_num_threads()}
    for name, batch in (("iass_paper", 2), ("umx_512", 2), ("iass_cpu_6", 4), ("umx_128_6", 4)):
        r = measure(name, batch, peak)
        for key, value in r.items():
            results[f"{name}.{key}"] = value
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    results["iass_paper_vs_umx_512.train_step_time_ratio"] = (
        results["iass_paper.train_step_s"] / results["umx_512.train_step_s"])
    results["iass_cpu_6_vs_umx_128_6.train_step_time_ratio"] = (
        results["iass_cpu_6.train_step_s"] / results["umx_128_6.train_step_s"])
    results["iass_paper.forward_speedup_optimized"] = (
        results["iass_paper.forward_s"] / results["iass_paper.forward_optimized_s"])
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    for k, v in main().items():
        print(f"{k}: {v}")
