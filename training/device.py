"""Where training runs: the device, and the processes of a ``torchrun`` (DistributedDataParallel).

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process is a rank: gloo on CPU, NCCL on CUDA; rank
0 writes the run directory. The helpers here are no-ops for a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from iass.errors import ConfigError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun``, or a single process (what prints a run's result)."""
    return int(os.environ.get("RANK", "0")) == 0


def backend_kind(choice: str | None) -> str:
    """``cuda`` when ``choice`` (auto | cpu | cuda) would train on CUDA, else ``cpu``."""
    choice = (choice or "auto").lower()
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def init_distributed(device_kind: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(choice: str | None, d: Dist | None = None) -> torch.device:
    choice = (choice or "auto").lower()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available (use --device cpu)")
        return torch.device("cuda", d.local_rank if d else 0)
    if choice != "cpu":
        raise ConfigError(f"device {choice!r}: expected auto, cpu or cuda")
    return torch.device("cpu")


def all_reduce_sum(values: list[float], d: Dist, device) -> list[float]:
    """``values`` summed over the ranks (the values themselves for a single process)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def param_checksum(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum((p.double() * (1 + i % 7)).sum().item() for i, p in enumerate(model.parameters())))


def rank_checksums(model: torch.nn.Module, d: Dist) -> list[float]:
    """Every rank's :func:`param_checksum` (they must be equal: the ranks are in sync)."""
    value = param_checksum(model)
    if not d.enabled:
        return [value]
    out = [None] * d.world
    dist.all_gather_object(out, value)
    return out


def broadcast_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Rank 0's buffers (BatchNorm statistics) to every rank, so all ranks validate one model."""
    if d.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def wrap_ddp(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """The module the optimizer steps through: DDP around ``model`` under torchrun, else itself."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
