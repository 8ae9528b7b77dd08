"""The training loop, shared by IASS and the Open-Unmix baseline.

Open-Unmix's recipe (``openunmix/train.py``): Adam (lr, weight decay), ReduceLROnPlateau on the
validation loss (factor ``lr_decay_gamma``, patience ``lr_decay_patience``, cooldown 10), early
stopping after ``patience`` epochs without improvement, the best model kept, input
normalisation initialised from training-set statistics. An epoch here is ``steps_per_epoch``
optimizer steps; ``max_steps`` caps the run (the demo's equal budget for both models).

Reproducible and resumable: the data stream is a pure function of (seed, example index)
(``data.py``), the checkpoint holds model, optimizer, scheduler, early stopping, RNG states and
the data position, so ``--resume`` after a kill ends with the same weights, bit for bit on CPU, as
an uninterrupted run.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (gloo on CPU, NCCL on CUDA); each rank takes its share of every global
batch, validation losses are summed over ranks, rank 0 writes the run directory, and the
parameters' checksums are compared across ranks at each validation (they must be equal).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from iass.io import clean_temp_files, stable_hash
from iass.training import run as runlib
from iass.training.data import (ChunkConfig, StepBatchSampler, TrainChunks, ValidChunks, loader_options,
                                magnitude)
from iass.training.losses import separation_loss

MODELS = ("iass", "umx")
RESUME_MAY_CHANGE = ("max_steps", "epochs", "device", "workers", "threads")  # budget and where it runs


# ------------------------------------------------------------------------------ distributed
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
            raise SystemExit("--device cuda: no CUDA device is available (use --device cpu)")
        return torch.device("cuda", d.local_rank if d else 0)
    if choice != "cpu":
        raise SystemExit(f"device {choice!r}: expected auto, cpu or cuda")
    return torch.device("cpu")


# --------------------------------------------------------------------------- early stopping
class EarlyStopping:
    """Open-Unmix's ``utils.EarlyStopping`` (mode min, min_delta 0), with a state dict."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best: float | None = None
        self.num_bad_epochs = 0

    def step(self, value: float) -> bool:
        if self.best is None:
            self.best = value
            return False
        if np.isnan(value):
            return True
        if self.patience == 0 or value < self.best:
            self.num_bad_epochs = 0
            self.best = value
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs, "patience": self.patience}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.num_bad_epochs = state["best"], state["num_bad_epochs"]


# ------------------------------------------------------------------------------- the model
@dataclass
class ModelSpec:
    kind: str
    config: dict[str, Any]
    targets: list[str]

    def build(self) -> torch.nn.Module:
        if self.kind == "iass":
            from iass.training.iass_model import build_iass

            return build_iass(self.config, self.targets)
        from iass.training.umx import build_umx

        return build_umx(self.config, self.targets)

    @property
    def activity_weight(self) -> float:
        return float(self.config.get("activity_weight", 0.0)) if self.kind == "iass" else 0.0


def resolve_spec(kind: str, params: dict, targets: list[str], sample_rate: int, hop: int) -> ModelSpec:
    from iass.training.presets import resolve_iass, resolve_umx

    model = params.get("model") or {}
    if kind == "iass":
        return ModelSpec(kind, resolve_iass(model.get("iass") or {}, sample_rate, hop), targets)
    if kind == "umx":
        return ModelSpec(kind, resolve_umx(model.get("umx") or {}, params.get("stft") or {},
                                           sample_rate, hop), targets)
    raise SystemExit(f"--model {kind!r}: expected one of {', '.join(MODELS)}")


def input_statistics(corpus_root, cfg: ChunkConfig, n_fft: int, hop: int, examples: int,
                     workers: int, target_energy: bool = False):
    """Per-bin mean and std of the mono mixture magnitude over ``examples`` training chunks
    (Open-Unmix's ``get_statistics``, std floored at 1e-4 x its max), no augmentation; with
    ``target_energy``, also each target's mean squared magnitude over the chunks where its audio
    is known (for the target balance of the loss; NaN for a target never known), else None."""
    stats_cfg = ChunkConfig(**{**cfg.__dict__, "seed": cfg.seed + 1})  # its own stream
    ds = TrainChunks(corpus_root, stats_cfg, augment=False)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=StepBatchSampler(0, max(1, math.ceil(examples / 4)), 4),
        generator=torch.Generator().manual_seed(cfg.seed), **loader_options(workers))
    total = total_sq = None
    count = 0
    n_targets = len(cfg.targets)
    energy, known_n = torch.zeros(n_targets, dtype=torch.float64), torch.zeros(n_targets, dtype=torch.float64)
    for mixture, targets, known, _ in loader:
        if target_energy:
            per_pair = magnitude(targets.double(), n_fft, hop).pow(2).flatten(2).mean(-1)  # (B, K)
            energy += (per_pair * known).sum(0)
            known_n += known.double().sum(0)
        mono = magnitude(mixture.double(), n_fft, hop).mean(1)        # (B, F, T)
        frames = mono.transpose(1, 2).reshape(-1, mono.shape[1])
        total = frames.sum(0) if total is None else total + frames.sum(0)
        total_sq = (frames**2).sum(0) if total_sq is None else total_sq + (frames**2).sum(0)
        count += frames.shape[0]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    std = torch.maximum(std, 1e-4 * std.max())
    return mean.float(), std.float(), (energy / known_n if target_energy else None)


def balance_weights(target_energy: torch.Tensor) -> torch.Tensor:
    """mean_j(E_j) / E_k per target (1 for a target whose energy is unknown or zero)."""
    e = torch.as_tensor(target_energy, dtype=torch.float64)
    ok = torch.isfinite(e) & (e > 0)
    w = torch.ones_like(e)
    if ok.any():
        w[ok] = e[ok].mean() / e[ok]
    return w.float()


# ------------------------------------------------------------------------------- the trainer
def _param_checksum(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum((p.double() * (1 + i % 7)).sum().item() for i, p in enumerate(model.parameters())))


def _all_reduce_sum(values: list[float], d: Dist, device) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class Trainer:
    def __init__(self, corpus_root, run_dir, kind: str, params: dict, *, resume: bool = False,
                 overwrite: bool = False, device: str | None = None, quiet: bool = False):
        from iass.pipelines.corpus_format import SAMPLE_RATE, Corpus

        self.params = params
        self.train_p = dict(params.get("train") or {})
        self.kind = kind
        self.quiet = quiet
        self.corpus_root = str(corpus_root)
        self.corpus = Corpus(corpus_root)
        self.run = runlib.RunDir(run_dir)
        device_choice = device or self.train_p.get("device", "auto")
        kind_guess = "cuda" if (device_choice in ("auto", None) and torch.cuda.is_available()) else str(device_choice)
        self.d = init_distributed("cuda" if kind_guess == "cuda" else "cpu")
        self.device = resolve_device(device_choice, self.d)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        else:
            runlib.keep_freed_memory()

        stft = params.get("stft") or {}
        self.hop = self.corpus.hop
        if int(stft.get("hop", self.hop)) != self.hop:
            raise SystemExit(f"params stft.hop = {stft.get('hop')} but the corpus {self.corpus.root} "
                             f"is labelled at hop {self.hop}: labels must follow the model's frames")
        self.sample_rate = int(self.corpus.manifest.get("params", {}).get("sample_rate", SAMPLE_RATE))
        targets = list(self.train_p.get("targets") or [])
        if not targets:
            raise SystemExit("no targets: set train.targets in params.yaml or pass --targets")
        self.spec = resolve_spec(kind, params, targets, self.sample_rate, self.hop)
        self.n_fft = int(self.spec.config["n_fft"])
        self.chunks = ChunkConfig.from_params(self.train_p, targets, self.hop, self.sample_rate)
        self.seed = int(self.train_p.get("seed", 42))
        self.batch_size = int(self.train_p.get("batch_size", 16))
        self.steps_per_epoch = int(self.train_p.get("steps_per_epoch", 50))
        self.max_steps = int(self.train_p.get("max_steps") or 0) or None
        self.epochs = int(self.train_p.get("epochs", 1000))
        self.workers = int(self.train_p.get("workers", 0))
        threads = int(self.train_p.get("threads", 0) or 0)
        if threads > 0:  # intra-op threads; oversubscribed cores make torch far slower
            torch.set_num_threads(threads)
        self._prepare_run_dir(resume, overwrite)

    # run directory ---------------------------------------------------------------------------
    def _identity(self) -> dict:
        """What must not change when resuming (everything but the budget)."""
        p = {k: v for k, v in self.params.items() if k in ("stft", "model")}
        p["train"] = {k: v for k, v in self.train_p.items() if k not in RESUME_MAY_CHANGE}
        return {"model": self.kind, "params": p, "corpus_version": self.corpus.version,
                "model_config": self.spec.config}

    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        self.resume = resume
        has_ckpt = self.run.path(runlib.LAST).exists()
        if resume and not has_ckpt:
            if self.d.main:
                print(f"{self.run.root}: no checkpoint yet; starting a fresh run", flush=True)
            self.resume = False
        elif has_ckpt and not resume and not overwrite:
            raise SystemExit(f"{self.run.root}: already holds a run; pass --resume to continue it "
                             "or --overwrite to start again")
        if self.resume:
            stored = self.run.read_run()
            if stored.get("identity_hash") != stable_hash(self._identity()):
                raise SystemExit(f"{self.run.path(runlib.RUN_FILE)}: the params, model or corpus "
                                 "differ from the run being resumed (only train.max_steps and "
                                 "train.epochs may change); use a new --run-dir")

    def _run_info(self, status: str) -> dict:
        c = self.corpus
        return {
            "model": self.kind,
            "targets": self.spec.targets,
            "model_config": self.spec.config,
            "stft": {"n_fft": self.n_fft, "hop": self.hop, "window": "hann", "center": True,
                     "sample_rate": self.sample_rate},
            "corpus": {"root": str(Path(self.corpus_root).resolve()), "version": c.version,
                       "format_version": c.manifest.get("format_version"),
                       "taxonomy_sha256": c.manifest.get("taxonomy_sha256"),
                       "tracks": {s: len(c.track_ids(split=s)) for s in ("train", "valid", "test")}},
            "seed": self.seed,
            "git": runlib.git_state(),
            "versions": runlib.library_versions(),
            "device": str(self.device),
            "world_size": self.d.world,
            "command": runlib.command_line(),
            "identity_hash": stable_hash(self._identity()),
            "status": status,
        }

    # data -----------------------------------------------------------------------------------
    def _train_loader(self, start_step: int, stop_step: int):
        ds = TrainChunks(self.corpus_root, self.chunks)
        sampler = StepBatchSampler(start_step, stop_step, self.batch_size, self.d.rank, self.d.world)
        return torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, pin_memory=self.device.type == "cuda",
            # its own generator: creating the loader must not consume the global torch RNG
            generator=torch.Generator().manual_seed(self.seed), **loader_options(self.workers))

    def _valid_loader(self):
        """Created once; its workers persist between validations (no start-up per epoch)."""
        if getattr(self, "_valid", None) is None:
            ds = ValidChunks(self.corpus_root, self.chunks,
                             chunks_per_track=int(self.train_p.get("valid_chunks_per_track", 2)))
            idx = list(range(self.d.rank, len(ds), self.d.world))
            opts = loader_options(min(self.workers, 1))
            self._valid = torch.utils.data.DataLoader(
                torch.utils.data.Subset(ds, idx), batch_size=max(1, self.batch_size // self.d.world),
                generator=torch.Generator().manual_seed(self.seed),
                persistent_workers=opts["num_workers"] > 0, **opts)
        return self._valid

    # one batch ------------------------------------------------------------------------------
    def _loss(self, model, batch):
        mixture, targets, known, activity = (t.to(self.device, non_blocking=True) for t in batch)
        mix_mag = magnitude(mixture, self.n_fft, self.hop, self.window)
        tgt_mag = magnitude(targets, self.n_fft, self.hop, self.window)
        estimate, logits = model(mix_mag)
        return separation_loss(estimate, tgt_mag, known, logits, activity, self.spec.activity_weight,
                               self.target_weights)

    def validate(self, model) -> dict[str, float]:
        model.eval()
        sums = [0.0, 0.0, 0.0, 0.0]  # mse*n, n, bce*m, m
        with torch.no_grad():
            for batch in self._valid_loader():
                terms = self._loss(model, batch)
                sums[0] += float(terms.mse) * float(terms.mse_weight)
                sums[1] += float(terms.mse_weight)
                sums[2] += float(terms.bce) * float(terms.bce_weight)
                sums[3] += float(terms.bce_weight)
        sums = _all_reduce_sum(sums, self.d, self.device)
        mse = sums[0] / max(sums[1], 1.0)
        bce = sums[2] / max(sums[3], 1.0)
        model.train()
        return {"valid_loss": mse + self.spec.activity_weight * bce, "valid_mse": mse, "valid_bce": bce}

    # the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        from tqdm import tqdm

        d = self.d
        self.window = torch.hann_window(self.n_fft, device=self.device)
        runlib.seed_everything(self.seed)
        model = self.spec.build().to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(self.train_p.get("lr", 1e-3)),
                                     weight_decay=float(self.train_p.get("weight_decay", 1e-5)))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=float(self.train_p.get("lr_decay_gamma", 0.3)),
            patience=int(self.train_p.get("lr_decay_patience", 80)), cooldown=10)
        stopper = EarlyStopping(int(self.train_p.get("patience", 140)))
        history: list[dict] = []
        best = {"loss": math.inf, "epoch": 0, "step": 0}
        step, epoch_sums = 0, [0.0, 0.0, 0.0, 0]
        self.target_weights = None

        if self.resume:
            ckpt = self.run.load_checkpoint(runlib.LAST, map_location=self.device)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            stopper.load_state_dict(ckpt["early_stopping"])
            history, best = ckpt["history"], ckpt["best"]
            step, epoch_sums = ckpt["position"]["step"], ckpt["position"]["epoch_sums"]
            if ckpt.get("target_weights") is not None:
                self.target_weights = torch.as_tensor(ckpt["target_weights"]).to(self.device)
            runlib.set_rng_state(ckpt["rng"])
            if ckpt.get("stopped") == "early_stopping":
                if d.main:
                    print(f"{self.run.root}: this run already stopped early; nothing to do", flush=True)
                return self._finish(history, best, step, "early_stopping", write=False)
            if d.main:
                print(f"resuming {self.run.root} at step {step}", flush=True)
                clean_temp_files(self.run.root)  # a killed run's half-written checkpoint
                info = self.run.read_run()
                info.setdefault("resumes", []).append({"step": step, "time": time.time()})
                info["status"] = "running"
                self.run.write_run(info)
        else:
            stats_n = int(self.train_p.get("stats_examples", 32))
            balance = bool(self.spec.config.get("target_balance"))
            energy = None
            if stats_n > 0:
                mean, std, energy = input_statistics(self.corpus_root, self.chunks, self.n_fft,
                                                     self.hop, stats_n, self.workers, balance)
                model.set_input_statistics(mean.to(self.device), std.to(self.device))
            if balance:
                if energy is None:
                    raise SystemExit("model.iass.target_balance needs train.stats_examples > 0 "
                                     "(the target energies are measured on those chunks)")
                self.target_weights = balance_weights(energy).to(self.device)
            if d.main:
                self.run.root.mkdir(parents=True, exist_ok=True)
                clean_temp_files(self.run.root)
                for name in (runlib.LAST, runlib.BEST, runlib.METRICS_FILE, runlib.HISTORY_FILE):
                    self.run.path(name).unlink(missing_ok=True)
                self.run.write_params(self.params)
                info = self._run_info("running")
                if self.target_weights is not None:
                    info["loss_target_weights"] = dict(zip(self.spec.targets,
                                                           map(float, self.target_weights.tolist())))
                self.run.write_run(info)
        if d.enabled:
            dist.barrier()

        train_model = model
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        model.train()

        last_step = self.epochs * self.steps_per_epoch
        if self.max_steps:
            last_step = min(last_step, self.max_steps)
        stop_reason = "max_steps" if self.max_steps and last_step == self.max_steps else "epochs"
        batches = iter(self._train_loader(step, last_step))
        while step < last_step:
            epoch = step // self.steps_per_epoch + 1
            epoch_end = min(epoch * self.steps_per_epoch, last_step)
            t0 = time.perf_counter()
            bar = tqdm(total=epoch_end - (epoch - 1) * self.steps_per_epoch,
                       initial=step - (epoch - 1) * self.steps_per_epoch, desc=f"{self.kind} epoch {epoch}",
                       disable=self.quiet or not d.main, leave=False, dynamic_ncols=True)
            while step < epoch_end:
                batch = next(batches)
                optimizer.zero_grad(set_to_none=True)
                terms = self._loss(train_model, batch)
                terms.total.backward()
                optimizer.step()
                step += 1
                loss = terms.total.item()
                epoch_sums[0] += loss
                epoch_sums[1] += terms.mse.item()
                epoch_sums[2] += terms.bce.item()
                epoch_sums[3] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
            bar.close()

            # end of epoch: validate, schedule, keep the best, checkpoint
            if d.enabled:  # every rank evaluates rank 0's BatchNorm statistics
                for buf in model.buffers():
                    dist.broadcast(buf, 0)
            sums = _all_reduce_sum(epoch_sums[:3], d, self.device)
            n = max(epoch_sums[3], 1) * d.world
            valid = self.validate(model)
            scheduler.step(valid["valid_loss"])
            stop = stopper.step(valid["valid_loss"])
            checksums = self._rank_checksums(model)
            row = {
                "epoch": epoch, "step": step,
                "train_loss": sums[0] / n, "train_mse": sums[1] / n, "train_bce": sums[2] / n,
                **valid, "lr": optimizer.param_groups[0]["lr"],
                "epoch_seconds": round(time.perf_counter() - t0, 3),
                "ranks_in_sync": len(set(checksums)) == 1, "param_checksum": checksums[0],
            }
            history.append(row)
            if not row["ranks_in_sync"]:
                raise RuntimeError(f"ranks diverged at step {step}: parameter checksums {checksums}")
            improved = valid["valid_loss"] < best["loss"]
            if improved:
                best = {"loss": valid["valid_loss"], "epoch": epoch, "step": step}
            epoch_sums = [0.0, 0.0, 0.0, 0]
            if d.main:
                print(f"{self.kind} epoch {epoch} step {step}: train {row['train_loss']:.5g} "
                      f"valid {row['valid_loss']:.5g} (mse {row['valid_mse']:.5g} bce {row['valid_bce']:.4g}) "
                      f"lr {row['lr']:.3g}{' best' if improved else ''} [{row['epoch_seconds']:.1f} s]",
                      flush=True)
                if improved:
                    self.run.save_checkpoint(runlib.BEST, self._weights(model, best))
                self.run.save_checkpoint(runlib.LAST, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "early_stopping": stopper.state_dict(),
                    "rng": runlib.rng_state(), "position": {"step": step, "epoch_sums": epoch_sums},
                    "history": history, "best": best, "stopped": "early_stopping" if stop else None,
                    "target_weights": None if self.target_weights is None else self.target_weights.cpu(),
                    **self._weights(model, best),
                })
                self.run.write_history(history)
                self.run.write_metrics(self._metrics(history, best, step, "running"))
            if d.enabled:
                dist.barrier()
            if stop:
                stop_reason = "early_stopping"
                if d.main:
                    print(f"early stopping: no improvement for {stopper.patience} epochs", flush=True)
                break
        return self._finish(history, best, step, stop_reason)

    def _rank_checksums(self, model) -> list[float]:
        value = _param_checksum(model)
        if not self.d.enabled:
            return [value]
        out = [None] * self.d.world
        dist.all_gather_object(out, value)
        return out

    def _weights(self, model, best) -> dict:
        """What inference needs: the weights and how to rebuild the network."""
        return {"weights": model.state_dict(), "kind": self.kind, "targets": self.spec.targets,
                "model_config": self.spec.config, "best": dict(best)}

    def _metrics(self, history, best, step, status) -> dict:
        last = history[-1] if history else {}
        return {
            "model": self.kind, "status": status, "steps": step, "epochs": len(history),
            "best_valid_loss": best["loss"] if history else None, "best_epoch": best["epoch"],
            "best_step": best["step"],
            **{f"final_{k}": last.get(k) for k in ("train_loss", "valid_loss", "valid_mse", "valid_bce", "lr")},
            "train_seconds": round(sum(r.get("epoch_seconds", 0.0) for r in history), 3),
            "ranks_in_sync": all(r.get("ranks_in_sync", True) for r in history),
        }

    def _finish(self, history, best, step, reason, write: bool = True) -> dict:
        metrics = self._metrics(history, best, step, f"done ({reason})")
        if self.d.main and write:
            self.run.write_metrics(metrics)
            self.run.write_history(history)
            info = self.run.read_run()
            info["status"] = f"done ({reason})"
            self.run.write_run(info)
            print(f"{self.kind}: {step} steps, {len(history)} epochs, best valid loss "
                  f"{metrics['best_valid_loss']:.5g} at epoch {best['epoch']} -> {self.run.root} "
                  f"({metrics['train_seconds']:.0f} s)", flush=True)
        return metrics


def train(corpus, run_dir, model: str, params: dict, *, targets=None, resume=False, overwrite=False,
          max_steps=None, device=None, quiet=False) -> dict:
    """Train ``model`` (iass | umx) on ``corpus`` into ``run_dir``; returns the metrics."""
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    params.setdefault("train", {})
    if targets:
        params["train"]["targets"] = list(targets)
    if max_steps is not None:
        params["train"]["max_steps"] = int(max_steps)
    if device is not None:
        params["train"]["device"] = device
    trainer = Trainer(corpus, run_dir, model, params, resume=resume, overwrite=overwrite,
                      device=device, quiet=quiet)
    try:
        return trainer.fit()
    finally:
        if trainer.d.enabled and dist.is_initialized():
            dist.destroy_process_group()
