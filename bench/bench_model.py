"""Model cost: IASS (paper and CPU presets) vs Open-Unmix, forward and training-step time on 6 s
chunks, parameter counts, FLOPs (torch's FlopCounterMode) and achieved GFLOP/s as a fraction of
this machine's float32 matmul peak measured in the same process (the better of MKL's sgemm and
oneDNN's; both reported), with the CPU's name, torch's kernel ISA and, where the CPU has bf16
instructions, the step under bf16 autocast too. Threads: the cores this process may use; memory
as the trainer keeps it (``keep_freed_memory``). Each time is the best of 5 after a warm-up (a
shared VM's speed moves by ~10 % from step to step); ``*_spread`` is worst/best (the load of
other processes).

    python -m bench model            # or: python bench/bench_model.py
"""
from __future__ import annotations

import copy
import os
import sys
import time

import torch

CHUNK_FRAMES = 6 * 44100 // 1024 + 1   # 6 s at hop 1024, center=True: 259 frames
TARGETS6 = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]


def _best_gflops(fn, flop: float, reps: int, clock=time.perf_counter) -> float:
    fn()
    best = 0.0
    for _ in range(reps):
        t = clock()
        fn()
        best = max(best, flop / (clock() - t) / 1e9)
    return best


def matmul_peaks(n: int = 2048, reps: int = 10, clock=time.perf_counter) -> dict:
    """Best float32 GFLOP/s of an n x n matmul (the reference for 'fraction of peak'), by the
    two libraries torch computes with on CPU: MKL's sgemm (``a @ b``) and oneDNN (the same
    product as a 1x1 convolution, the library of the network's convolutions). On an AMD EPYC
    MKL's sgemm reaches about half of oneDNN's, so the reference is the better of the two; both
    are reported. Also bf16 (oneDNN) where the CPU has bf16 instructions (not the reference)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    products = fp32_products(a, b)
    flop = 2 * n**3
    out = {"mkl_sgemm_gflops": 0.0, "onednn_fp32_gflops": 0.0}
    for _ in range(2):   # interleaved: a burst of load elsewhere hits both
        for key, product in products.items():
            out[key] = max(out[key], _best_gflops(product, flop, reps // 2, clock))
    out["matmul_peak_gflops"] = max(out["mkl_sgemm_gflops"], out["onednn_fp32_gflops"])
    if cpu_has_bf16():
        ab, bb = a.bfloat16(), b.bfloat16()
        out["onednn_bf16_gflops"] = _best_gflops(lambda: ab @ bb, flop, reps // 2)
    return out


def product_as_convolution(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, w) such that ``conv2d(x, w)`` is ``a @ b`` (n x n) as a 1x1 convolution of a batch of
    16 images, n channels and n / 16 pixels each: ``conv2d(x, w)[i, :, p, 0] == (a @ b)[:, i n/16
    + p]``. A batch of 16, not 1: with one image and one thread torch runs a 1x1 convolution
    through its own im2col + MKL sgemm path instead of oneDNN (``ONEDNN_VERBOSE=1`` shows no
    primitive), and a one-thread "oneDNN" peak would be MKL's again."""
    n = a.shape[0]
    return b.reshape(n, 16, n // 16, 1).transpose(0, 1).contiguous(), a.reshape(n, n, 1, 1)


def fp32_products(a: torch.Tensor, b: torch.Tensor) -> dict:
    """``a @ b`` by each library, keyed as :func:`matmul_peaks` reports them: MKL's sgemm and
    oneDNN's 1x1 convolution (:func:`product_as_convolution`)."""
    x, w = product_as_convolution(a, b)
    return {"mkl_sgemm_gflops": lambda: a @ b,
            "onednn_fp32_gflops": lambda: torch.nn.functional.conv2d(x, w)}


def peak_sampler(peaks: dict, n: int = 2048):
    """A function that times one n x n product with the library that gave ``peaks`` its
    ``matmul_peak_gflops`` and returns its GFLOP/s: the peak sampled between a model's timed
    steps (:func:`timed_with_peak`)."""
    products = fp32_products(torch.randn(n, n), torch.randn(n, n))
    product = products[max(products, key=lambda key: (peaks[key], key == "onednn_fp32_gflops"))]  # a tie: oneDNN
    product()

    def sample() -> float:
        t = time.perf_counter()
        product()
        return 2 * n**3 / (time.perf_counter() - t) / 1e9
    return sample


def timed_with_peak(fn, sample_peak, reps: int = 5) -> tuple[float, float, float]:
    """(best, worst) seconds of ``reps`` calls of ``fn`` after a warm-up, and the best matmul
    GFLOP/s sampled before each call and after the last: the reference measured in the same
    seconds as the model. A shared VM's speed drifts over a bench (one run: Open-Unmix's step 27 %
    slower than 12 minutes before, against a peak measured at the start that was 8 % higher);
    this ratio moves with the machine, one against a peak from another minute does not."""
    fn()
    times, peaks = [], []
    for _ in range(reps):
        peaks.append(sample_peak())
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    peaks.append(sample_peak())
    return min(times), max(times), max(peaks)


def cpu_has_bf16() -> bool:
    """The CPU computes bfloat16 natively (AVX512_BF16 / AMX): bf16 autocast can pay."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def timed(fn, reps: int = 5, clock=time.perf_counter) -> tuple[float, float]:
    """(best, worst) seconds of ``reps`` calls after a warm-up (allocator, oneDNN primitive
    cache): the best is the machine's speed, worst/best the load's spread."""
    fn()
    times = []
    for _ in range(reps):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times), max(times)


def one_thread_cpu_fractions(names=(("iass_paper", 2), ("iass_cpu_6", 4))) -> dict:
    """The IASS training steps against the matmul peak, both on one thread and timed by that
    thread's CPU time (``time.thread_time``): other processes on the machine take wall-clock
    time from both, not CPU time, so this ratio holds on a loaded machine where the wall-clock
    one does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peaks = matmul_peaks(reps=6, clock=time.thread_time)
        out = {f"one_thread_cpu.{k}": v for k, v in peaks.items() if k != "onednn_bf16_gflops"}
        for name, batch in names:
            _, _, _, step = setup(name, batch)
            step_flops = flops(step)
            t, _ = timed(step, reps=2, clock=time.thread_time)
            out[f"one_thread_cpu.{name}.train_step_s"] = t
            out[f"one_thread_cpu.{name}.train_step_peak_fraction"] = (
                step_flops / t / 1e9 / peaks["matmul_peak_gflops"])
    finally:
        torch.set_num_threads(threads)
    return out


def grouped_conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation,
                               transposed, output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """torch's FLOP formula for ``convolution_backward``, with the weight gradient of a grouped
    convolution divided by the groups: torch counts it as if every group saw every input channel
    (``groups`` times the forward's FLOPs; the frequency Linear runs as a convolution with one
    group per target). The input gradient torch already counts right."""
    from torch.utils.flop_counter import conv_backward_flop

    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding,
            groups)
    grad_input = conv_backward_flop(*args, [output_mask[0], False], out_val=out_shape) if output_mask[0] else 0
    grad_weight = conv_backward_flop(*args, [False, output_mask[1]], out_val=out_shape) if output_mask[1] else 0
    return grad_input + grad_weight // max(int(groups), 1)


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping={
            torch.ops.aten.convolution_backward: grouped_conv_backward_flop}) as counter:
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


def setup(name: str, batch: int):
    """One model at ``batch`` random 6 s chunks: (model, mixture, forward(), step(precision)).
    The step is the trainer's (training/train.py): forward (under bf16 autocast with
    ``precision="bf16"``), its loss in float32 (masked MSE + the activity BCE), backward, Adam."""
    from iass.training.losses import separation_loss

    torch.manual_seed(0)
    model, n_fft = build(name)
    k = len(model.targets)
    mix = torch.rand(batch, 2, n_fft // 2 + 1, CHUNK_FRAMES)
    target = torch.rand(batch, k, 2, n_fft // 2 + 1, CHUNK_FRAMES)
    known = torch.ones(batch, k, dtype=torch.bool)
    labels = torch.rand(batch, k, CHUNK_FRAMES).round()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def forward():
        with torch.no_grad():
            model.eval()(mix)

    def step(precision: str = "fp32"):
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            est, logits = model(mix)
        separation_loss(est.float(), target, known, None if logits is None else logits.float(),
                        labels).total.backward()
        opt.step()

    return model, mix, forward, step


def measure(name: str, batch: int, peak: float, sample_peak, bf16: bool = False) -> dict:
    """Forward and training step of one model at ``batch`` 6 s chunks, as the trainer runs them
    (fp32; with ``bf16`` also the step under bf16 autocast, ``train.precision: bf16``). Fractions
    are of ``peak`` (measured once, at the bench's start); the steps also against the peak
    ``sample_peak`` measures between them (``*_window_peak_fraction``)."""
    from iass.training.iass_model import optimize_for_inference

    model, mix, forward, step = setup(name, batch)
    out = {"params": sum(p.numel() for p in model.parameters()), "batch": batch}
    fwd_flops, step_flops = flops(forward), flops(step)
    t_fwd, _ = timed(forward)
    t_step, t_step_worst, window = timed_with_peak(step, sample_peak)
    out.update({
        "forward_gflop_per_chunk": fwd_flops / batch / 1e9,
        "forward_s": t_fwd, "forward_gflops": fwd_flops / t_fwd / 1e9,
        "train_step_s": t_step, "train_step_spread": t_step_worst / t_step,
        "train_step_gflops": step_flops / t_step / 1e9,
    })
    out["forward_peak_fraction"] = out["forward_gflops"] / peak
    out["train_step_peak_fraction"] = out["train_step_gflops"] / peak
    out["train_step_window_peak_gflops"] = window
    out["train_step_window_peak_fraction"] = out["train_step_gflops"] / window
    if bf16:   # the same FLOPs in bf16, against the fp32 peak
        t_bf16, worst, window = timed_with_peak(lambda: step("bf16"), sample_peak)
        out.update({"train_step_bf16_s": t_bf16, "train_step_bf16_spread": worst / t_bf16,
                    "train_step_bf16_peak_fraction": step_flops / t_bf16 / 1e9 / peak,
                    "train_step_bf16_window_peak_fraction": step_flops / t_bf16 / 1e9 / window})
    if name.startswith("iass"):  # eval path used by inference: BN folded + channels-last
        fast = optimize_for_inference(copy.deepcopy(model))

        def forward_fast():
            with torch.no_grad():
                fast(mix)

        t_fast, _ = timed(forward_fast)
        out.update({"forward_optimized_s": t_fast, "forward_optimized_gflops": fwd_flops / t_fast / 1e9,
                    "forward_optimized_peak_fraction": fwd_flops / t_fast / 1e9 / peak})
    return out


def main() -> dict:
    from bench.__main__ import cpu_model
    from iass.training.run import keep_freed_memory

    keep_freed_memory()              # as the trainer does on CPU (no page faults per step)
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        peaks = matmul_peaks()
        peak = peaks["matmul_peak_gflops"]
        sample_peak = peak_sampler(peaks)
        bf16 = cpu_has_bf16()
        results: dict = {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                         "cpu_bf16": bf16, "torch_threads": torch.get_num_threads(), **peaks}
        for name, batch in (("iass_paper", 2), ("umx_512", 2), ("iass_cpu_6", 4), ("umx_128_6", 4)):
            r = measure(name, batch, peak, sample_peak, bf16=bf16 and name.startswith("iass"))
            for key, value in r.items():
                results[f"{name}.{key}"] = value
            print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
        results.update(one_thread_cpu_fractions())
    finally:
        torch.set_num_threads(threads)
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
