"""Training runs: the loss goes down, the run directory reproduces the run, resume after SIGKILL is
bit-identical, two-process DDP stays in sync, the separator interface for evaluation."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from corpus_fixtures import TRAIN_HOP, default_fixture_tracks, tiny_train_overrides, write_fixture_corpus
from iass.config import load_params
from iass.errors import ConfigError, CorpusError, RunError
from iass.training import run as runlib
from iass.training.data import magnitude
from iass.training.inference import load_separator
from iass.training.config import TrainConfig, resolve_train_params
from iass.training.train import Trainer, train

HOP = TRAIN_HOP
TINY = tiny_train_overrides(steps_per_epoch=3)
TARGETS = ["vocals", "bass", "piano"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_fixture_corpus(root, hop=HOP)
    return root


def tiny_params(*extra):
    return load_params(None, TINY + list(extra))


def cli(corpus, run_dir, model, *extra):
    # no --quiet: the per-epoch lines (logged to stderr) are what the kill test waits for
    args = ["--model", model, "--corpus", str(corpus), "--run-dir", str(run_dir), "--device", "cpu",
            "--targets", *TARGETS]
    for o in TINY:
        args += ["-S", o]
    return args + list(extra)


def weights(run_dir, name=runlib.LAST):
    return torch.load(Path(run_dir) / name, map_location="cpu", weights_only=False)


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.slow
def test_tiny_iass_run_learns_and_its_run_dir_reproduces_it(corpus, tmp_path):
    run_a = tmp_path / "a"
    metrics = train(corpus, run_a, "iass", tiny_params("train.max_steps=24"), targets=TARGETS,
                    device="cpu", quiet=True)
    history = list(csv.DictReader((run_a / runlib.HISTORY_FILE).open()))
    assert len(history) == 8 and metrics["steps"] == 24
    first, last = float(history[0]["train_loss"]), float(history[-1]["train_loss"])
    assert last < 0.7 * first, history
    assert float(history[-1]["valid_loss"]) < float(history[0]["valid_loss"])
    assert metrics["best_valid_loss"] == min(float(r["valid_loss"]) for r in history)

    # the run directory says everything about the run
    info = json.loads((run_a / runlib.RUN_FILE).read_text())
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert info["corpus"]["version"] == manifest["corpus_version"]
    assert info["model"] == "iass" and info["targets"] == TARGETS and info["seed"] == 42
    assert info["model_config"]["preset"] == "tiny" and info["model_config"]["hop"] == HOP
    assert set(info["git"]) == {"commit", "dirty"} and info["git"]["commit"]
    assert {"python", "torch", "numpy", "openunmix"} <= set(info["versions"])
    assert info["status"] == "done (max_steps)"
    # params.yaml balances the targets of the shared network: weights mean(E) / E_k
    balance = info["loss_target_weights"]
    assert set(balance) == set(TARGETS) and all(w > 0 for w in balance.values())
    assert sum(1 / w for w in balance.values()) / len(balance) == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(weights(run_a)["target_weights"], torch.tensor([balance[t] for t in TARGETS]))
    saved = yaml.safe_load((run_a / runlib.PARAMS_FILE).read_text())
    assert saved["train"]["targets"] == TARGETS and saved["train"]["max_steps"] == 24
    assert saved["model"]["iass"]["preset"] == "tiny"

    # ... and reproduces it: the same corpus and the saved params give the same weights
    run_b = tmp_path / "b"
    train(corpus, run_b, "iass", load_params(run_a / runlib.PARAMS_FILE), device="cpu", quiet=True)
    assert_same_tensors(weights(run_a)["model"], weights(run_b)["model"])
    assert_same_tensors(weights(run_a, runlib.BEST)["weights"], weights(run_b, runlib.BEST)["weights"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["iass", "umx"])
def test_resume_after_sigkill_is_bit_identical(corpus, tmp_path, model):
    steps = 15  # 5 epochs of 3 steps; UMX's LSTM dropout draws from the torch RNG
    reference = tmp_path / "reference"
    train(corpus, reference, model, tiny_params(), targets=TARGETS, max_steps=steps, device="cpu",
          quiet=True)

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "iass.cli", "train", *cli(corpus, killed, model, "--max-steps", str(steps))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if f"{model} epoch 2 step 6" in line:
            proc.send_signal(signal.SIGKILL)  # mid-run, possibly mid-checkpoint
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    state = weights(killed)
    assert state["position"]["step"] in (3, 6) and state["position"]["step"] < steps

    out = subprocess.run([sys.executable, "-m", "iass.cli", "train",
                          *cli(corpus, killed, model, "--max-steps", str(steps), "--resume")],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resuming" in out.stderr   # logged (stderr); stdout has the result line
    final, ref = weights(killed), weights(reference)
    assert final["position"]["step"] == steps
    assert_same_tensors(final["model"], ref["model"])
    assert_same_tensors(weights(killed, runlib.BEST)["weights"], weights(reference, runlib.BEST)["weights"])
    assert [r["valid_loss"] for r in final["history"]] == [r["valid_loss"] for r in ref["history"]]
    info = json.loads((killed / runlib.RUN_FILE).read_text())
    assert info["resumes"] and info["status"] == "done (max_steps)"


def test_an_existing_run_is_neither_overwritten_nor_resumed_with_other_params(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(corpus, run_dir, "umx", tiny_params(), targets=TARGETS, max_steps=3, device="cpu", quiet=True)
    with pytest.raises(RunError, match="--resume"):
        train(corpus, run_dir, "umx", tiny_params(), targets=TARGETS, max_steps=3, device="cpu")
    with pytest.raises(RunError, match="differ"):
        train(corpus, run_dir, "umx", tiny_params("train.lr=0.1"), targets=TARGETS, max_steps=6,
              device="cpu", resume=True)
    # a longer budget is fine: the run continues
    metrics = train(corpus, run_dir, "umx", tiny_params(), targets=TARGETS, max_steps=6, device="cpu",
                    resume=True, quiet=True)
    assert metrics["steps"] == 6 and metrics["epochs"] == 2


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_in_sync(corpus, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "iass.cli", "train", *cli(corpus, run_dir, "iass", "--max-steps", "6")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**ENV, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    info = json.loads((run_dir / runlib.RUN_FILE).read_text())
    assert info["world_size"] == 2
    history = weights(run_dir)["history"]
    assert len(history) == 2 and all(r["ranks_in_sync"] for r in history)
    metrics = json.loads((run_dir / runlib.METRICS_FILE).read_text())
    assert metrics["ranks_in_sync"] and metrics["steps"] == 6
    assert load_separator(run_dir).targets == TARGETS


def test_separators_for_evaluation(corpus, tmp_path):
    audio = torch.randn(2, 22050) * 0.1
    for model in ("iass", "umx"):
        run_dir = tmp_path / model
        train(corpus, run_dir, model, tiny_params(), targets=TARGETS, max_steps=3, device="cpu", quiet=True)
        sep = load_separator(run_dir)
        assert sep.targets == TARGETS and sep.sample_rate == 44100 and sep.hop == HOP
        assert sep.name == model and sep.has_activity == (model == "iass")
        mag = magnitude(audio, sep.n_fft, sep.hop)
        mask, logits = sep.masks(mag)
        assert mask.shape == (3, 2, sep.n_fft // 2 + 1, mag.shape[-1]) and (mask >= 0).all()
        if model == "iass":
            assert logits.shape == (3, mag.shape[-1])
            torch.testing.assert_close(mask[:, 0], mask[:, 1])   # one mono mask for both channels
            direct, direct_logits = sep.model.masks(mag[None])
            torch.testing.assert_close(mask[:, 0], direct[0])
        else:
            assert logits is None
            with torch.no_grad():
                est, _ = sep.model(mag[None])
            torch.testing.assert_close(mask * mag, est[0], rtol=1e-4, atol=1e-6)
        assert load_separator(run_dir, checkpoint="last").targets == TARGETS


def test_a_corpus_without_a_valid_split_fails_before_the_first_step(tmp_path, monkeypatch):
    """No `valid` tracks: a CorpusError when the trainer is made, before any statistics or
    optimizer step (it used to train first and fail at the first validation)."""
    root = tmp_path / "corpus"
    write_fixture_corpus(root, [t for t in default_fixture_tracks() if t.split != "valid"], hop=HOP)

    def no_step(*_, **__):
        raise AssertionError("training started")

    monkeypatch.setattr(Trainer, "_start_or_resume", no_step)
    monkeypatch.setattr(Trainer, "_run_epoch", no_step)
    with pytest.raises(CorpusError, match="no tracks in split 'valid'"):
        train(root, tmp_path / "run", "iass", tiny_params(), targets=TARGETS, max_steps=3, device="cpu",
              quiet=True)
    assert not (tmp_path / "run").exists()
    out = subprocess.run([sys.executable, "-m", "iass.cli", "train", *cli(root, tmp_path / "run", "umx")],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("error: ") and "'valid'" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()


def test_what_the_config_cannot_support_fails_before_training(corpus, tmp_path):
    def make(*extra, targets=TARGETS, kind="iass"):
        params, config = resolve_train_params(tiny_params(*extra), targets=targets, device="cpu")
        return Trainer(corpus, tmp_path / "run", kind, params, config)

    with pytest.raises(ConfigError, match="train.steps_per_epoch"):
        make("train.steps_per_epoch=0")
    with pytest.raises(ConfigError, match="train.batch_size"):
        make("train.batch_size=lots")
    with pytest.raises(ConfigError, match="target_balance needs train.stats_examples"):
        make("train.stats_examples=0", "model.iass.target_balance=true")
    with pytest.raises(ConfigError, match="ukulele"):
        make(targets=["vocals", "ukulele"])
    with pytest.raises(ConfigError, match="--model"):
        make(kind="demucs")
    with pytest.raises(CorpusError, match="hop"):
        make("stft.hop=512")
    with pytest.raises(CorpusError, match="not a built corpus"):
        Trainer(tmp_path / "nowhere", tmp_path / "run", "umx", tiny_params())
    assert not (tmp_path / "run").exists()


def test_train_config_defaults_and_overrides():
    """Each knob's default lives in TrainConfig; the train section and the command line's
    overrides meet in resolve_train_params, which also returns the params the run records."""
    assert TrainConfig.from_section({}) == TrainConfig() and TrainConfig().seed == 42
    from iass.training.data import ChunkConfig

    assert ChunkConfig(targets=("vocals",), chunk_samples=4096, hop=256).seed == TrainConfig.seed
    params = load_params(None)
    recorded, cfg = resolve_train_params(params, targets=["bass"], max_steps=7, device="cpu")
    assert recorded["train"]["targets"] == ["bass"] and recorded["train"]["max_steps"] == 7
    assert params["train"]["targets"] != ["bass"]          # the caller's params stay as they were
    assert cfg.targets == ("bass",) and cfg.max_steps == 7 and cfg.device == "cpu"
    for key, value in params["train"].items():
        if key not in ("targets", "max_steps", "device", "gain"):
            assert getattr(cfg, key) == value, key
    assert cfg.gain == tuple(params["train"]["gain"])
    assert TrainConfig.from_section({"max_steps": 0, "gain": None}).max_steps is None
    assert TrainConfig.from_section({"gain": None}).gain == (1.0, 1.0)   # no random gain
    assert TrainConfig(epochs=3, steps_per_epoch=4, max_steps=100).last_step() == 12
    assert TrainConfig(epochs=3, steps_per_epoch=4, max_steps=5).stop_reason() == "max_steps"
