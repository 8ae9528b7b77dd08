"""The training loop, shared by IASS and the Open-Unmix baseline.

Open-Unmix's recipe (``openunmix/train.py``): Adam (lr, weight decay), ReduceLROnPlateau on the
validation loss (factor ``lr_decay_gamma``, patience ``lr_decay_patience``, cooldown 10), early
stopping after ``patience`` epochs without improvement, the best model kept, input
normalisation initialised from training-set statistics. An epoch here is ``steps_per_epoch``
optimizer steps; ``max_steps`` caps the run (the demo's equal budget for both models). The knobs
are a :class:`~iass.training.config.TrainConfig` (params.yaml ``train``).

:meth:`Trainer.fit` is three parts: :meth:`~Trainer._start_or_resume` (the model, optimizer,
scheduler and early stopping, fresh with the input statistics, or from the last checkpoint),
:meth:`~Trainer._run_epoch` (the optimizer steps of one epoch) and
:meth:`~Trainer._validate_and_checkpoint` (validation, schedule, best model, checkpoint).
Everything the data must allow (a train and a valid split, the targets, the hop) is checked when
the :class:`Trainer` is made, before the first step.

Reproducible and resumable: the data stream is a pure function of (seed, example index)
(``data.py``), the checkpoint holds model, optimizer, scheduler, early stopping, RNG states and
the data position, so ``--resume`` after a kill ends with the same weights, bit for bit on CPU, as
an uninterrupted run.

Precision and compilation (``train.precision``, ``train.compile``): bf16 runs the forward and
the loss under ``torch.autocast(device, bfloat16)`` while the weights, gradients and optimizer
step stay float32; compile wraps the stepping model in ``torch.compile`` (validation and the
checkpoints use the plain module, whose parameters it shares). The defaults (fp32, no compile) run
exactly the code path of before these knobs, bit for bit.

Multi-pitch (``model.iass.pitch_weight`` > 0): the examples carry the targets' piano rolls, the
loss gains the pitch head's masked BCE (``losses.py``), and history / metrics gain ``train_pitch``
and ``valid_pitch``; with the default 0 none of this exists and the run is the run of before,
bit for bit (its config, identity hash, history columns and checkpoints).

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (``device.py``); each rank takes its share of every global batch,
validation losses are summed over ranks, rank 0 writes the run directory, and the parameters'
checksums are compared across ranks at each validation (they must be equal).
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from iass.errors import ConfigError, CorpusError, RunError
from iass.io import clean_temp_files, stable_hash
from iass.log import progress_enabled
from iass.training import run as runlib
from iass.training.precision import autocast, first_compiled_step
from iass.training.preflight import check_data
from iass.training.config import RESUME_MAY_CHANGE, TrainConfig, resolve_train_params
from iass.training.data import StepBatchSampler, TrainChunks, ValidChunks, loader_options, magnitude
from iass.training.device import (Dist, all_reduce_sum, backend_kind, barrier, broadcast_buffers,
                                  init_distributed, rank_checksums, resolve_device, shutdown, wrap_ddp)
from iass.training.losses import separation_loss
from iass.training.models import MODELS, ModelSpec, resolve_spec
from iass.training.run import EarlyStopping
from iass.training.stats import balance_weights, input_statistics

# what other modules imported from here before device.py, models.py and stats.py held them
__all__ = ["Trainer", "train", "summary_line", "EarlyStopping", "TrainConfig", "RESUME_MAY_CHANGE",
           "MODELS", "ModelSpec", "resolve_spec", "Dist", "init_distributed", "resolve_device",
           "input_statistics", "balance_weights"]

log = logging.getLogger(__name__)

LR_DECAY_COOLDOWN = 10  # ReduceLROnPlateau's cooldown, epochs (Open-Unmix's)


# ------------------------------------------------------------------------------- the trainer
def _open_corpus(root):
    from iass.pipelines.corpus_format import Corpus

    try:
        return Corpus(root)
    except (FileNotFoundError, ValueError) as exc:
        raise CorpusError(str(exc)) from None


class Trainer:
    def __init__(self, corpus_root, run_dir, kind: str, params: dict, config: TrainConfig | None = None,
                 *, resume: bool = False, overwrite: bool = False, quiet: bool = False):
        from iass.pipelines.corpus_format import SAMPLE_RATE

        self.params = params
        self.train_p = dict(params.get("train") or {})   # as written: the run's identity
        self.cfg = cfg = config if config is not None else TrainConfig.from_params(params)
        self.kind = kind
        self.corpus_root = str(corpus_root)
        self.corpus = _open_corpus(corpus_root)
        self.run = runlib.RunDir(run_dir)

        stft = params.get("stft") or {}
        self.hop = self.corpus.hop
        if int(stft.get("hop", self.hop)) != self.hop:
            raise CorpusError(f"params stft.hop = {stft.get('hop')} but the corpus {self.corpus.root} "
                              f"is labelled at hop {self.hop}: labels must follow the model's frames")
        self.sample_rate = int(self.corpus.manifest.get("params", {}).get("sample_rate", SAMPLE_RATE))
        targets = list(cfg.targets)
        if not targets:
            raise ConfigError("no targets: set train.targets in params.yaml or pass --targets")
        self.spec = resolve_spec(kind, params, targets, self.sample_rate, self.hop)
        self.n_fft = int(self.spec.config["n_fft"])
        self.pitch_weight = self.spec.pitch_weight     # 0: no pitch head (the default)
        self.chunks = cfg.chunk_config(targets, self.hop, self.sample_rate, pitch=self.pitch_weight > 0)

        self.d = init_distributed(backend_kind(cfg.device))
        self._check_data()
        self.device = resolve_device(cfg.device, self.d)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            if cfg.precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise ConfigError(f"params.yaml train.precision: 'bf16', but {torch.cuda.get_device_name()} "
                                  "has no bfloat16 support (use fp32)")
        else:
            runlib.keep_freed_memory()
        self.progress = not quiet and self.d.main and progress_enabled()
        if cfg.threads > 0:  # intra-op threads; oversubscribed cores make torch far slower
            torch.set_num_threads(cfg.threads)
        self._prepare_run_dir(resume, overwrite)

    def _check_data(self) -> None:
        """Fail now, not after training, when the corpus or the config cannot support the run
        (:func:`~iass.training.preflight.check_data`)."""
        check_data(self)
        if self.pitch_weight > 0:
            from iass.training.pitch import check_pitch_labels

            check_pitch_labels(self)

    # run directory ---------------------------------------------------------------------------
    def _identity(self) -> dict:
        """What must not change when resuming (everything but the budget)."""
        p = {k: v for k, v in self.params.items() if k in ("stft", "model")}
        iass_p = (p.get("model") or {}).get("iass")
        if isinstance(iass_p, dict) and "pitch_weight" in iass_p and not iass_p["pitch_weight"]:
            # pitch_weight 0 written or left out: the same run (and the hash of before the knob)
            p["model"] = {**p["model"], "iass": {k: v for k, v in iass_p.items() if k != "pitch_weight"}}
        p["train"] = {k: v for k, v in self.train_p.items() if k not in RESUME_MAY_CHANGE}
        if self.cfg.precision == "fp32":   # written or left out: the same run (and the same hash as before the knob)
            p["train"].pop("precision", None)
        return {"model": self.kind, "params": p, "corpus_version": self.corpus.version,
                "model_config": self.spec.config}

    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        self.resume = resume
        has_ckpt = self.run.path(runlib.LAST).exists()
        if resume and not has_ckpt:
            if self.d.main:
                log.info("%s: no checkpoint yet; starting a fresh run", self.run.root)
            self.resume = False
        elif has_ckpt and not resume and not overwrite:
            raise RunError(f"{self.run.root}: already holds a run; pass --resume to continue it "
                           "or --overwrite to start again")
        if self.resume:
            stored = self.run.read_run()
            if stored.get("identity_hash") != stable_hash(self._identity()):
                raise RunError(f"{self.run.path(runlib.RUN_FILE)}: the params, model or corpus "
                               "differ from the run being resumed (only "
                               + ", ".join(f"train.{k}" for k in RESUME_MAY_CHANGE)
                               + " may change); use a new --run-dir")

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
            "seed": self.cfg.seed,
            "git": runlib.git_state(),
            "versions": runlib.library_versions(),
            "device": str(self.device),
            "precision": self.cfg.precision,
            "compile": self.cfg.compile,
            "world_size": self.d.world,
            "command": runlib.command_line(),
            "identity_hash": stable_hash(self._identity()),
            "status": status,
        }

    # data -----------------------------------------------------------------------------------
    def _train_loader(self, start_step: int, stop_step: int):
        ds = TrainChunks(self.corpus_root, self.chunks)
        sampler = StepBatchSampler(start_step, stop_step, self.cfg.batch_size, self.d.rank, self.d.world)
        return torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, pin_memory=self.device.type == "cuda",
            # its own generator: creating the loader must not consume the global torch RNG
            generator=torch.Generator().manual_seed(self.cfg.seed), **loader_options(self.cfg.workers))

    def _valid_loader(self):
        """Created once; its workers persist between validations (no start-up per epoch)."""
        if getattr(self, "_valid", None) is None:
            ds = ValidChunks(self.corpus_root, self.chunks, chunks_per_track=self.cfg.valid_chunks_per_track)
            idx = list(range(self.d.rank, len(ds), self.d.world))
            opts = loader_options(min(self.cfg.workers, 1))
            self._valid = torch.utils.data.DataLoader(
                torch.utils.data.Subset(ds, idx), batch_size=max(1, self.cfg.batch_size // self.d.world),
                generator=torch.Generator().manual_seed(self.cfg.seed),
                persistent_workers=opts["num_workers"] > 0, **opts)
        return self._valid

    # one batch ------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.cfg.precision, self.device)

    def _loss(self, model, batch):
        mixture, targets, known, activity, *pitch = (t.to(self.device, non_blocking=True) for t in batch)
        mix_mag = magnitude(mixture, self.n_fft, self.hop, self.window)
        tgt_mag = magnitude(targets, self.n_fft, self.hop, self.window)
        with self._autocast():
            estimate, logits, *pitch_logits = model(mix_mag)
            # the loss in float32 (its sums and counts; a no-op in fp32): a bf16 count of
            # labelled frames would round above 256
            if self.pitch_weight > 0:
                pitch_args = {"pitch_logits": pitch_logits[0].float(), "pitch_labels": pitch[0],
                              "pitch_weight": self.pitch_weight}
            else:
                pitch_args = {}
            return separation_loss(estimate.float(), tgt_mag, known,
                                   None if logits is None else logits.float(), activity,
                                   self.spec.activity_weight, self.target_weights, **pitch_args)

    def validate(self, model) -> dict[str, float]:
        model.eval()
        sums = [0.0, 0.0, 0.0, 0.0] + ([0.0, 0.0] if self.pitch_weight > 0 else [])  # mse*n, n, bce*m, m[, pitch*c, c]
        with torch.no_grad():
            for batch in self._valid_loader():
                terms = self._loss(model, batch)
                sums[0] += float(terms.mse) * float(terms.mse_weight)
                sums[1] += float(terms.mse_weight)
                sums[2] += float(terms.bce) * float(terms.bce_weight)
                sums[3] += float(terms.bce_weight)
                if terms.pitch is not None:
                    sums[4] += float(terms.pitch) * float(terms.pitch_weight)
                    sums[5] += float(terms.pitch_weight)
        sums = all_reduce_sum(sums, self.d, self.device)
        mse = sums[0] / max(sums[1], 1.0)
        bce = sums[2] / max(sums[3], 1.0)
        model.train()
        if self.pitch_weight > 0:
            pitch = sums[4] / max(sums[5], 1.0)
            return {"valid_loss": mse + self.spec.activity_weight * bce + self.pitch_weight * pitch,
                    "valid_mse": mse, "valid_bce": bce, "valid_pitch": pitch}
        return {"valid_loss": mse + self.spec.activity_weight * bce, "valid_mse": mse, "valid_bce": bce}

    # the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        self.window = torch.hann_window(self.n_fft, device=self.device)
        if not self._start_or_resume():
            return self._finish("early_stopping", write=False)
        train_model = wrap_ddp(self.model, self.d, self.device)
        if self.cfg.compile:
            # lazily: the graphs are compiled by the first step (_first_compiled_step)
            train_model = torch.compile(train_model)
            self._compile_checked = False
        self.model.train()

        last_step, stop_reason = self.cfg.last_step(), self.cfg.stop_reason()
        per_epoch = self.cfg.steps_per_epoch
        batches = iter(self._train_loader(self.step, last_step))
        while self.step < last_step:
            epoch = self.step // per_epoch + 1
            t0 = time.perf_counter()
            self._run_epoch(train_model, batches, epoch, min(epoch * per_epoch, last_step))
            if self._validate_and_checkpoint(epoch, t0):
                stop_reason = "early_stopping"
                break
        return self._finish(stop_reason)

    def _start_or_resume(self) -> bool:
        """The model, optimizer, scheduler and early stopping: fresh (input statistics, a new run
        directory) or as the last checkpoint left them. False: the resumed run already stopped
        early, there is nothing to do."""
        cfg = self.cfg
        runlib.seed_everything(cfg.seed)
        self.model = self.spec.build().to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=cfg.lr_decay_gamma, patience=cfg.lr_decay_patience,
            cooldown=LR_DECAY_COOLDOWN)
        self.stopper = EarlyStopping(cfg.patience)
        self.history: list[dict] = []
        self.best = {"loss": math.inf, "epoch": 0, "step": 0}
        self.step, self.epoch_sums = 0, self._zero_sums()
        self.target_weights = None
        if self.resume:
            if not self._resume():
                return False
        else:
            self._start()
        barrier(self.d)
        return True

    def _start(self) -> None:
        balance = bool(self.spec.config.get("target_balance"))
        if self.cfg.stats_examples > 0:
            mean, std, energy = input_statistics(self.corpus_root, self.chunks, self.n_fft, self.hop,
                                                 self.cfg.stats_examples, self.cfg.workers, balance)
            self.model.set_input_statistics(mean.to(self.device), std.to(self.device))
            if balance:
                self.target_weights = balance_weights(energy).to(self.device)
        if self.d.main:
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

    def _resume(self) -> bool:
        ckpt = self.run.load_checkpoint(runlib.LAST, map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.stopper.load_state_dict(ckpt["early_stopping"])
        self.history, self.best = ckpt["history"], ckpt["best"]
        self.step, self.epoch_sums = ckpt["position"]["step"], ckpt["position"]["epoch_sums"]
        if ckpt.get("target_weights") is not None:
            self.target_weights = torch.as_tensor(ckpt["target_weights"]).to(self.device)
        runlib.set_rng_state(ckpt["rng"])
        if ckpt.get("stopped") == "early_stopping":
            if self.d.main:
                log.info("%s: this run already stopped early; nothing to do", self.run.root)
            return False
        if self.d.main:
            log.info("resuming %s at step %d", self.run.root, self.step)
            clean_temp_files(self.run.root)  # a killed run's half-written checkpoint
            info = self.run.read_run()
            info.setdefault("resumes", []).append({"step": self.step, "time": time.time()})
            info["status"] = "running"
            self.run.write_run(info)
        return True

    def _run_epoch(self, train_model, batches, epoch: int, epoch_end: int) -> None:
        """The optimizer steps from the current one to ``epoch_end`` (a resumed epoch: its rest)."""
        from tqdm import tqdm

        first = (epoch - 1) * self.cfg.steps_per_epoch
        bar = tqdm(total=epoch_end - first, initial=self.step - first, desc=f"{self.kind} epoch {epoch}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        sums = self.epoch_sums
        while self.step < epoch_end:
            batch = next(batches)
            if self.cfg.compile and not self._compile_checked:
                terms = self._first_compiled_step(train_model, batch)
            else:
                terms = self._step(train_model, batch)
            self.step += 1
            loss = terms.total.item()
            sums[0] += loss
            sums[1] += terms.mse.item()
            sums[2] += terms.bce.item()
            sums[3] += 1
            if terms.pitch is not None:
                sums[4] += terms.pitch.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
        bar.close()

    def _step(self, train_model, batch):
        """One optimizer step; returns its loss terms."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = self._loss(train_model, batch)
        terms.total.backward()
        self.optimizer.step()
        return terms

    def _first_compiled_step(self, train_model, batch):
        """The first compiled step, checked against eager (:mod:`~iass.training.precision`)."""
        return first_compiled_step(self, train_model, batch)

    def _validate_and_checkpoint(self, epoch: int, t0: float) -> bool:
        """End of an epoch: validate, schedule, keep the best, checkpoint. True: stop early."""
        d, model, step = self.d, self.model, self.step
        broadcast_buffers(model, d)  # every rank evaluates rank 0's BatchNorm statistics
        sums = all_reduce_sum(self.epoch_sums[:3] + self.epoch_sums[4:], d, self.device)
        n = max(self.epoch_sums[3], 1) * d.world
        valid = self.validate(model)
        self.scheduler.step(valid["valid_loss"])
        stop = self.stopper.step(valid["valid_loss"])
        checksums = rank_checksums(model, d)
        row = {
            "epoch": epoch, "step": step,
            "train_loss": sums[0] / n, "train_mse": sums[1] / n, "train_bce": sums[2] / n,
            **({"train_pitch": sums[3] / n} if len(sums) > 3 else {}),
            **valid, "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - t0, 3),
            "ranks_in_sync": len(set(checksums)) == 1, "param_checksum": checksums[0],
        }
        self.history.append(row)
        if not row["ranks_in_sync"]:
            raise RuntimeError(f"ranks diverged at step {step}: parameter checksums {checksums}")
        improved = valid["valid_loss"] < self.best["loss"]
        if improved:
            self.best = {"loss": valid["valid_loss"], "epoch": epoch, "step": step}
        self.epoch_sums = self._zero_sums()
        if d.main:
            pitch = f" pitch {row['valid_pitch']:.4g}" if "valid_pitch" in row else ""
            log.info("%s epoch %d step %d: train %.5g valid %.5g (mse %.5g bce %.4g%s) lr %.3g%s [%.1f s]",
                     self.kind, epoch, step, row["train_loss"], row["valid_loss"], row["valid_mse"],
                     row["valid_bce"], pitch, row["lr"], " best" if improved else "", row["epoch_seconds"])
            self._checkpoint(improved, stop)
        barrier(d)
        if stop and d.main:
            log.info("early stopping: no improvement for %d epochs", self.stopper.patience)
        return stop

    def _zero_sums(self) -> list:
        """An epoch's running sums: loss, mse, bce, steps (and the pitch BCE with a pitch head)."""
        return [0.0, 0.0, 0.0, 0] + ([0.0] if self.pitch_weight > 0 else [])

    def _checkpoint(self, improved: bool, stop: bool) -> None:
        if improved:
            self.run.save_checkpoint(runlib.BEST, self._weights())
        self.run.save_checkpoint(runlib.LAST, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "early_stopping": self.stopper.state_dict(),
            "rng": runlib.rng_state(), "position": {"step": self.step, "epoch_sums": self.epoch_sums},
            "history": self.history, "best": self.best, "stopped": "early_stopping" if stop else None,
            "target_weights": None if self.target_weights is None else self.target_weights.cpu(),
            **self._weights(),
        })
        self.run.write_history(self.history)
        self.run.write_metrics(self._metrics("running"))

    def _weights(self) -> dict:
        """What inference needs: the weights and how to rebuild the network."""
        return {"weights": self.model.state_dict(), "kind": self.kind, "targets": self.spec.targets,
                "model_config": self.spec.config, "best": dict(self.best)}

    def _metrics(self, status) -> dict:
        history, best = self.history, self.best
        last = history[-1] if history else {}
        return {
            "model": self.kind, "status": status, "steps": self.step, "epochs": len(history),
            "best_valid_loss": best["loss"] if history else None, "best_epoch": best["epoch"],
            "best_step": best["step"],
            **{f"final_{k}": last.get(k) for k in ("train_loss", "valid_loss", "valid_mse", "valid_bce", "lr")},
            **({"final_valid_pitch": last.get("valid_pitch")} if self.pitch_weight > 0 else {}),
            "train_seconds": round(sum(r.get("epoch_seconds", 0.0) for r in history), 3),
            "ranks_in_sync": all(r.get("ranks_in_sync", True) for r in history),
        }

    def _finish(self, reason, write: bool = True) -> dict:
        metrics = self._metrics(f"done ({reason})")
        if self.d.main and write:
            self.run.write_metrics(metrics)
            self.run.write_history(self.history)
            info = self.run.read_run()
            info["status"] = f"done ({reason})"
            self.run.write_run(info)
            log.debug("%s", summary_line(metrics, self.run.root))
        return metrics


def summary_line(metrics: dict, run_dir) -> str:
    """The one-line result of a run (``iass train`` prints it)."""
    best = metrics.get("best_valid_loss")
    best = "none" if best is None else f"{best:.5g}"
    return (f"{metrics['model']}: {metrics['steps']} steps, {metrics['epochs']} epochs, best valid loss "
            f"{best} at epoch {metrics['best_epoch']} -> {run_dir} ({metrics['train_seconds']:.0f} s)")


def train(corpus, run_dir, model: str, params: dict, *, targets=None, resume=False, overwrite=False,
          max_steps=None, device=None, quiet=False) -> dict:
    """Train ``model`` (iass | umx) on ``corpus`` into ``run_dir``; returns the metrics.

    ``targets``, ``max_steps`` and ``device`` override params.yaml ``train`` (and are recorded
    in the run's params.yaml); ``quiet`` hides the progress bars."""
    params, config = resolve_train_params(params, targets=targets, max_steps=max_steps, device=device)
    trainer = Trainer(corpus, run_dir, model, params, config, resume=resume, overwrite=overwrite,
                      quiet=quiet)
    try:
        return trainer.fit()
    finally:
        shutdown(trainer.d)
