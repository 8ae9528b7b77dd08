"""bench/__main__.py: the machine line of bench/results.md names the CPU the ratios were measured on;
bench/device.py: the device check runs to the end on a CPU."""
from __future__ import annotations

import platform

from bench.__main__ import cpu_model

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme avx512f

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
"""

ARM_NO_NAME = """processor\t: 0
BogoMIPS\t: 50.00
CPU implementer\t: 0x41
"""


def test_cpu_model_reads_the_model_name_of_proc_cpuinfo():
    assert cpu_model(X86) == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"


def test_cpu_model_falls_back_to_platform_without_a_model_name():
    assert cpu_model(ARM_NO_NAME) == (platform.processor() or platform.machine())
    assert cpu_model("") == (platform.processor() or platform.machine())


def test_device_check_runs_on_a_cpu_and_names_the_cuda_parts_it_skips(capsys, tmp_path, monkeypatch):
    """python -m bench.device --quick: runs to the end without CUDA; every CUDA part is a row
    marked skipped with its reason, the small CPU step timings are measured."""
    import torch

    from bench import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # also on a CUDA machine
    out = tmp_path / "device.md"
    assert device.main(["--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text().strip() in text           # --out: the same page as stdout
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| part")]
    cuda_rows = [r for r in rows if r.split("|")[2].strip().startswith("cuda")]
    parts = {r.split("|")[1].strip() for r in cuda_rows}
    assert parts == {"train step", "DDP step (NCCL)", "separation"}, cuda_rows
    assert all("skipped: no CUDA device" in r for r in cuda_rows), cuda_rows
    cpu_steps = [r for r in rows if r.startswith("| train step | cpu") and "ms/step" in r]
    assert any(", fp32 |" in r for r in cpu_steps) and any(", bf16 |" in r for r in cpu_steps), rows
    assert any(r.startswith("| loader | cpu") and "chunks/s" in r for r in rows), rows
    assert any(r.startswith("| separation | cpu") and "RTF" in r for r in rows), rows
    assert "FAILED" not in text


def test_flop_count_of_a_grouped_convolution_backward_is_twice_its_forward():
    """bench_model's FLOPs: a grouped convolution's backward (input and weight gradients) costs
    twice its forward; torch's own formula counts the weight gradient ``groups`` times over. The
    ungrouped count is torch's unchanged."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from bench.bench_model import flops

    torch.manual_seed(0)
    x = torch.randn(2, 3 * 8, 7, 1, requires_grad=True)
    w = torch.randn(3 * 5, 8, 1, 1, requires_grad=True)
    forward = 2 * 2 * 7 * (3 * 5) * 8          # per group: (7 x 8) @ (8 x 5), batch 2
    assert flops(lambda: F.conv2d(x, w, groups=3)) == forward
    assert flops(lambda: F.conv2d(x, w, groups=3).sum().backward()) == 3 * forward
    x1 = torch.randn(2, 4, 9, 6, requires_grad=True)
    w1 = torch.randn(6, 4, 3, 3, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        F.conv2d(x1, w1, padding=1).sum().backward()
    assert flops(lambda: F.conv2d(x1, w1, padding=1).sum().backward()) == counter.get_total_flops()


def test_profile_step_records_every_product_of_the_model_and_replays_its_flops():
    """bench/profile_step.py: the convolutions and matrix products it records from one forward
    (nn.Conv2d's, the transposed ones, the first skip's addmm, the frequency Linear's grouped
    convolution) replay, forward + backward, to exactly the FLOPs of the model's own
    forward + backward: none is missed, none counted twice."""
    import torch

    from bench.bench_model import flops
    from bench.profile_step import _replay, record
    from iass.training.iass_model import build_iass
    from iass.training.presets import resolve_iass

    torch.manual_seed(0)
    cfg = resolve_iass({"preset": "tiny", "multi_target": True}, 44100, 1024)
    model = build_iass(cfg, ["vocals", "bass"])
    mix = torch.rand(1, 2, cfg["n_fft"] // 2 + 1, 16)

    def step():
        estimates, logits = model(mix)[:2]
        (estimates.sum() + logits.sum()).backward()

    calls = record(model, mix)
    kinds = {func._opname for func, _ in calls}
    assert kinds == {"convolution", "addmm"}
    assert sum(_replay(func, args, reps=1)[1] for func, args in calls) == flops(step)


def test_the_onednn_peak_computes_the_same_product_as_the_mkl_one():
    """bench_model's oneDNN reference is a @ b itself, laid out as a batch of 16 1x1-convolved
    images (the layout torch sends to oneDNN at any thread count)."""
    import torch

    from bench.bench_model import product_as_convolution

    torch.manual_seed(0)
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    x, w = product_as_convolution(a, b)
    y = torch.nn.functional.conv2d(x, w)
    assert y.shape == (16, 64, 4, 1)
    assert torch.allclose(y[..., 0].permute(1, 0, 2).reshape(64, 64), a @ b, atol=1e-4)


def test_timed_with_peak_samples_the_reference_around_every_timed_call():
    """The window peak is sampled before each timed call and after the last (reps + 1 samples,
    interleaved with the calls), and the best of them is returned with the best and worst call."""
    from bench.bench_model import timed_with_peak

    calls: list[str] = []
    samples = iter([100.0, 300.0, 200.0, 250.0])

    def step():
        calls.append("step")

    def sample():
        calls.append("peak")
        return next(samples)

    best, worst, window = timed_with_peak(step, sample, reps=3)
    assert calls == ["step", "peak", "step", "peak", "step", "peak", "step", "peak"]
    assert window == 300.0 and 0 <= best <= worst


def test_peak_sampler_times_the_better_library(monkeypatch):
    """oneDNN's product is a convolution, MKL's a matmul: the sampler runs the one that gave the
    bench its peak."""
    import torch

    from bench.bench_model import peak_sampler

    convs = []
    conv2d = torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda *a, **k: convs.append(1) or conv2d(*a, **k))
    sample = peak_sampler({"onednn_fp32_gflops": 2.0, "mkl_sgemm_gflops": 1.0}, n=64)
    assert sample() > 0 and len(convs) == 2          # the warm-up and the sample
    sample = peak_sampler({"onednn_fp32_gflops": 1.0, "mkl_sgemm_gflops": 2.0}, n=64)
    assert sample() > 0 and len(convs) == 2          # MKL: no convolution
