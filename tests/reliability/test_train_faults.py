"""Training killed mid-CHECKPOINT-write, twice (tests/test_train.py already kills mid-epoch):
every file under its final name stays whole, `--resume` ends bit-identical to a run never killed.

The kills come from the IASS_FAULT_KILL_AT hook in iass.io: SIGKILL after a checkpoint's temp
file is complete and before its rename (the run directory writes through iass.io.atomic_path)."""
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

from corpus_fixtures import write_fixture_corpus
from iass.config import load_params
from iass.io import TMP_MARK
from iass.training import run as runlib
from iass.training.train import train

HOP = 256
TINY = [  # the tiny configuration of tests/test_train.py
    "model.iass.preset=tiny", f"stft.hop={HOP}", "stft.n_fft=512", "train.chunk_seconds=0.5",
    "train.batch_size=4", "train.steps_per_epoch=3", "train.workers=0", "train.stats_examples=4",
    "train.valid_chunks_per_track=1", "model.umx.hidden_size=16", "train.lr=0.003",
    "train.threads=1",
]
TARGETS = ["vocals", "bass", "piano"]
STEPS = 12  # 4 epochs of 3 steps


def _cmd(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "iass.cli", "train", "--model", "umx", "--corpus", str(corpus),
            "--run-dir", str(run_dir), "--device", "cpu", "--targets", *TARGETS, "--quiet",
            "--max-steps", str(STEPS)]
    for o in TINY:
        args += ["-S", o]
    return args + list(extra)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "IASS_FAULT_KILL_AT"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _whole(run_dir: Path) -> None:
    """Every checkpoint loads, every JSON / CSV parses; temp files are ignored (never read)."""
    for p in run_dir.rglob("*"):
        if not p.is_file() or TMP_MARK in p.name:
            continue
        if p.suffix == ".pt":
            torch.load(p, map_location="cpu", weights_only=False)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            list(csv.DictReader(p.open()))


@pytest.mark.slow
def test_kill_mid_checkpoint_write_then_resume_is_bit_identical(tmp_path):
    corpus = tmp_path / "corpus"
    write_fixture_corpus(corpus, hop=HOP)
    reference = tmp_path / "reference"
    train(corpus, reference, "umx", load_params(None, TINY), targets=TARGETS, max_steps=STEPS,
          device="cpu", quiet=True)

    killed = tmp_path / "killed"
    # 1: the 2nd last.pt (end of epoch 2), after best.pt may have moved on: resume from epoch 1
    # 2: the resumed run's 1st history.csv, right after its last.pt was renamed into place
    for n, point in enumerate(("2:last.pt", "1:history.csv")):
        extra = ("--resume",) if n else ()
        proc = subprocess.run(_cmd(corpus, killed, *extra), env=_env(IASS_FAULT_KILL_AT=point),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"not killed at {point}: {proc.stdout}{proc.stderr}"
        _whole(killed)
        assert list(killed.rglob(f"*{TMP_MARK}*")), "the kill should land between temp and rename"
        last = torch.load(killed / runlib.LAST, map_location="cpu", weights_only=False)
        assert 0 < last["position"]["step"] < STEPS

    done = subprocess.run(_cmd(corpus, killed, "--resume"), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    _whole(killed)
    assert not list(killed.rglob(f"*{TMP_MARK}*")), "a resumed run removes the killed run's temp files"
    final = torch.load(killed / runlib.LAST, map_location="cpu", weights_only=False)
    ref = torch.load(reference / runlib.LAST, map_location="cpu", weights_only=False)
    assert final["position"]["step"] == STEPS
    assert final["model"].keys() == ref["model"].keys()
    for k in ref["model"]:
        assert torch.equal(final["model"][k], ref["model"][k]), k
    best = torch.load(killed / runlib.BEST, map_location="cpu", weights_only=False)["weights"]
    ref_best = torch.load(reference / runlib.BEST, map_location="cpu", weights_only=False)["weights"]
    for k in ref_best:
        assert torch.equal(best[k], ref_best[k]), k
    assert [r["valid_loss"] for r in final["history"]] == [r["valid_loss"] for r in ref["history"]]
    assert (killed / runlib.HISTORY_FILE).read_text().count("\n") == \
        (reference / runlib.HISTORY_FILE).read_text().count("\n")
