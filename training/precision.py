"""``train.precision`` and ``train.compile`` for the trainer.

bf16 runs the forward under ``torch.autocast(device, bfloat16)`` while the weights, gradients and
optimizer step stay float32. ``torch.compile`` builds its graphs on the first step: a failure
there is a ConfigError naming train.compile (never a silent fall-back), and the first compiled
loss is checked against the eager model's on the same weights, batch and RNG state, because
compilation may change float rounding, not the result (torch 2.13's CPU inductor miscompiled
IASS's ConvTranspose2d -> leaky_relu -> BatchNorm2d in training mode: the first loss off by 2 %
on the tiny preset, 156 % on the cpu preset; since the decoder's 3x3 transposed convolutions run
as convolutions (iass_model.transposed_conv3x3) the compiled first step matches eager: gradients
within 5e-5 of float64, eager's 2e-5). ``tr`` is the :class:`~iass.training.train.Trainer`.
"""
from __future__ import annotations

import contextlib
import logging
import time

import torch

from iass.errors import ConfigError, IassError

log = logging.getLogger(__name__)

#: train.compile: how far the compiled model's first loss may be from the eager one (relative):
#: float32 kernels fused differently round differently (~1e-6); bf16 rounding is coarser
COMPILE_RTOL = {"fp32": 1e-3, "bf16": 1e-2}


def autocast(precision: str, device: torch.device):
    """bf16: matmuls and convolutions of the forward in bfloat16 (no loss scaling needed);
    fp32: the forward as it is."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def first_compiled_step(tr, train_model, batch):
    """The first step of a compiled model, where torch.compile builds its forward and
    backward graphs: a failure there (no C++ compiler, an unsupported operation) is a
    ConfigError naming train.compile, never a silent fall-back to eager mode. The step's loss
    is also checked against the eager model's on the same weights, batch and RNG state:
    compilation may change float rounding, not the result (see the module doc: torch 2.13's
    CPU inductor miscompiled IASS's transposed convolutions in training mode)."""
    t0 = time.perf_counter()
    eager = eager_loss(tr, batch)
    try:
        terms = tr._step(train_model, batch)
    except (IassError, MemoryError):
        raise
    except Exception as exc:  # dynamo / inductor / the C++ toolchain: many exception types
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ConfigError(f"params.yaml train.compile: true, but torch.compile failed: "
                          f"{type(exc).__name__}: {reason[:300]} (set train.compile: false)") from exc
    compiled = terms.total.item()
    rel = abs(compiled - eager) / max(abs(eager), 1e-12)
    if not rel <= COMPILE_RTOL[tr.cfg.precision]:
        raise ConfigError(
            f"params.yaml train.compile: true, but torch.compile changes the result: first-step loss "
            f"{compiled:.6g} compiled vs {eager:.6g} eager (relative {rel:.2g} > "
            f"{COMPILE_RTOL[tr.cfg.precision]:g}; torch {torch.__version__} on {tr.device.type}) "
            "(set train.compile: false)")
    tr._compile_checked = True
    if tr.d.main:
        log.info("torch.compile: first step (compilation included) took %.1f s; its loss matches "
                 "eager (relative %.2g)", time.perf_counter() - t0, rel)
    return terms

def eager_loss(tr, batch) -> float:
    """The loss of the uncompiled model on ``batch``, leaving no trace: the RNG state
    (dropout) and the BatchNorm buffers are as before, no gradient is kept."""
    buffers = [b.detach().clone() for b in tr.model.buffers()]
    devices = [tr.device] if tr.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        loss = tr._loss(tr.model, batch).total.item()
    with torch.no_grad():
        for b, saved in zip(tr.model.buffers(), buffers):
            b.copy_(saved)
    return loss
