"""Cross-renderer transfer: train on one soundfont pool, evaluate inside and outside it.

The experiment is a chain of ordinary ``iass`` commands (each logged, and listed in
``<out>/commands.sh`` so it can be rerun by hand), in one working folder ``<out>``::

    synth/train-<pool>/   iass synth --layout native --seed S   --soundfont <pool...>
    synth/test-<font>/    iass synth --layout native --seed S+1 --soundfont <font>
    corpora/train-<pool>  iass corpus build (train + valid)     params-train.yaml
    corpora/test-<font>   iass corpus build (every song: test)  params-test.yaml
    runs/<pool>-<model>   iass train --model <model> --max-steps K
    reports/test-<font>   iass evaluate, every run on that soundfont's songs
    transfer.md, transfer.json   the table: median SDR per run and test soundfont

Every training pool renders the SAME compositions (seed S) and every test soundfont the same
other compositions (seed S+1): a difference between two cells of the table is the soundfonts'
doing, not the songs'. The IBM and input-SDR of each test soundfont say how hard its songs are
in themselves. A step whose output is complete (its ``.done`` marker) is not redone, so an
interrupted run continues where it stopped.
"""
from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from iass.errors import ConfigError, RunError

log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path(__file__).resolve().parents[1] / "experiments" / "transfer" / "params.yaml"
MODELS = ("iass", "umx")
TEST_SEED_OFFSET = 1


@dataclass
class TransferConfig:
    out: str
    train_pools: list[list[str]]
    test_soundfonts: list[str]
    tracks: int = 24
    test_tracks: int = 12
    duration: float = 20.0
    seed: int = 0
    max_steps: int = 200
    models: tuple[str, ...] = MODELS
    params: str = str(DEFAULT_PARAMS)
    workers: int = 0
    overrides: list[str] = field(default_factory=list)   # key.sub=value on the params file
    commands: list[str] = field(default_factory=list)


def pool_label(fonts) -> str:
    return "+".join(sf.name for sf in fonts)


def spec_of(sf) -> str:
    """How a command names a soundfont: a builtin by its name (portable), a user's file by path."""
    from iass.pipelines.synth.soundfonts import BUILTIN, builtin_path

    if sf.name in BUILTIN and str(builtin_path(sf.name).resolve()) == sf.path:
        return sf.name
    return sf.path


def _resolve(cfg: TransferConfig):
    """Check every soundfont and the options before anything is written (ConfigError)."""
    from iass.pipelines.synth.soundfonts import needed_presets, resolve, resolve_pool

    if not cfg.train_pools or not cfg.test_soundfonts:
        raise ConfigError("transfer: need at least one --train-pool and one --test-soundfont")
    bad = [m for m in cfg.models if m not in MODELS]
    if bad:
        raise ConfigError(f"transfer: unknown model {bad[0]!r}; choose from {', '.join(MODELS)}")
    if cfg.tracks < 4 or cfg.test_tracks < 1 or cfg.max_steps < 1:
        raise ConfigError("transfer: --tracks >= 4 (train + valid), --test-tracks >= 1, --max-steps >= 1")
    pools = [resolve_pool(p, needed_presets()) for p in cfg.train_pools]
    tests = [resolve(s) for s in cfg.test_soundfonts]
    resolve_pool([t.path for t in tests])     # no soundfont twice among the tests
    for t in tests:
        resolve_pool([t.path], needed_presets())
    labels = [pool_label(p) for p in pools]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"transfer: a training pool is listed twice ({', '.join(labels)})")
    return pools, tests


def _write_params(cfg: TransferConfig, out: Path) -> tuple[Path, Path]:
    import yaml

    from iass.config import load_params
    from iass.io import atomic_write_text

    params = load_params(cfg.params, cfg.overrides)
    params["train"] = {**params.get("train", {}), "max_steps": int(cfg.max_steps)}
    train = {k: v for k, v in params.items() if k != "sources"}
    test = json.loads(json.dumps(train))
    test["corpus"]["splits"] = {**test["corpus"]["splits"], "valid_fraction": 0.0, "test_fraction": 1.0}
    paths = out / "params-train.yaml", out / "params-test.yaml"
    for path, doc in zip(paths, (train, test)):
        atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return paths


def _step(cfg: TransferConfig, out: Path, name: str, args: list[str], inputs=()) -> None:
    """Run ``iass <args>`` unless its marker says it is done with the same command and the same
    ``inputs`` (params files, by content); a failure is a RunError."""
    import hashlib

    marker = out / ".done" / name
    line = "iass " + " ".join(shlex.quote(a) for a in args)
    cfg.commands.append(line)
    stamp = line + "".join(f"\n{p} {hashlib.sha256(Path(p).read_bytes()).hexdigest()}" for p in inputs)
    if marker.exists() and marker.read_text() == stamp:
        log.info("transfer: %s done before", name)
        return
    log.info("transfer: %s", line)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "iass.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise RunError(f"transfer step {name} failed ({last[-1] if last else proc.returncode}); "
                       f"command: {line}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp)
    log.info("transfer: %s took %.0f s", name, time.perf_counter() - t0)


def run_transfer(cfg: TransferConfig) -> dict:
    """Synthesize, build, train and evaluate (see the module doc); returns the results table."""
    pools, tests = _resolve(cfg)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    p_train, p_test = _write_params(cfg, out)
    synth_common = ["--layout", "native", "--duration", str(cfg.duration), "--no-progress",
                    "--workers", str(cfg.workers)]
    t0 = time.perf_counter()
    for pool in pools:
        label = pool_label(pool)
        _step(cfg, out, f"synth-train-{label}",
              ["synth", "--out", str(out / "synth" / f"train-{label}"), "--tracks", str(cfg.tracks),
               "--seed", str(cfg.seed), *synth_common, "--soundfont", *[spec_of(sf) for sf in pool]])
    for sf in tests:
        _step(cfg, out, f"synth-test-{sf.name}",
              ["synth", "--out", str(out / "synth" / f"test-{sf.name}"), "--tracks",
               str(cfg.test_tracks), "--seed", str(cfg.seed + TEST_SEED_OFFSET), *synth_common,
               "--soundfont", spec_of(sf)])
    for kind, names, params in (("train", [pool_label(p) for p in pools], p_train),
                                ("test", [sf.name for sf in tests], p_test)):
        for name in names:
            _step(cfg, out, f"corpus-{kind}-{name}",
                  ["corpus", "build", "--params", str(params),
                   "--source", f"synth={out / 'synth' / f'{kind}-{name}'}",
                   "--out", str(out / "corpora" / f"{kind}-{name}"), "--no-progress"],
                  inputs=[params])
    runs = []
    for pool in pools:
        label = pool_label(pool)
        for model in cfg.models:
            run_dir = out / "runs" / f"{label}-{model}"
            runs.append((label, model, run_dir))
            _step(cfg, out, f"train-{label}-{model}",
                  ["train", "--model", model, "--corpus", str(out / "corpora" / f"train-{label}"),
                   "--run-dir", str(run_dir), "--params", str(p_train), "--overwrite", "--quiet"],
                  inputs=[p_train])
    for sf in tests:
        args = ["evaluate", "--corpus", str(out / "corpora" / f"test-{sf.name}"),
                "--params", str(p_test), "--split", "test",
                "--out", str(out / "reports" / f"test-{sf.name}"), "--quiet"]
        for _, _, run_dir in runs:
            args += ["--run", str(run_dir)]
        _step(cfg, out, f"evaluate-{sf.name}", args, inputs=[p_test])
    table = collect(out, pools, tests, runs)
    table["wall_seconds"] = round(time.perf_counter() - t0, 1)
    table["config"] = {"tracks": cfg.tracks, "test_tracks": cfg.test_tracks, "duration": cfg.duration,
                       "seed": cfg.seed, "max_steps": cfg.max_steps, "models": list(cfg.models),
                       "params": str(cfg.params), "overrides": list(cfg.overrides)}
    from iass.io import atomic_write_json, atomic_write_text

    atomic_write_json(out / "transfer.json", table)
    atomic_write_text(out / "transfer.md", markdown(table))
    atomic_write_text(out / "commands.sh", "#!/bin/sh\nset -e\n" + "\n".join(cfg.commands) + "\n")
    return table


def _medians(report: Path) -> dict:
    """{run name, or 'ibm' / 'input_sdr': (median SDR over every (track, target), {target: median})}
    from an evaluation's results.parquet (one row per track x target x method x metric)."""
    import polars as pl

    from iass.evaluation.evaluate import slug

    df = (pl.read_parquet(report / "results.parquet")
          .filter(pl.col("metric") == "SDR").drop_nulls("value").filter(pl.col("value").is_finite()))
    out = {}
    for (run, method), sub in df.group_by(["run", "method"]):
        key = run if run else slug(method)
        per = sub.group_by("target").agg(pl.col("value").median()).sort("target")
        out[key] = (float(sub.get_column("value").median()),
                    {t: round(float(v), 2) for t, v in per.iter_rows()})
    return out


def collect(out: Path, pools, tests, runs) -> dict:
    """The results table from the evaluation reports."""
    rows, refs = [], {}
    for sf in tests:
        report = out / "reports" / f"test-{sf.name}"
        med = _medians(report)
        refs[sf.name] = {k: round(med[k][0], 2) for k in ("ibm", "input_sdr") if k in med}
        for label, model, run_dir in runs:
            if run_dir.name not in med:
                raise RunError(f"{report}: no scores of run {run_dir.name} (has: {', '.join(sorted(med))})")
            rows.append({"train_pool": label, "model": model, "test_soundfont": sf.name,
                         "in_pool": sf.name in label.split("+"),
                         "median_sdr": round(med[run_dir.name][0], 2),
                         "per_target": med[run_dir.name][1]})
    fonts = {sf.name: sf.describe() for p in pools for sf in p}
    fonts.update({sf.name: sf.describe() for sf in tests})
    return {"rows": rows, "references": refs, "soundfonts": fonts}


def markdown(table: dict) -> str:
    tests = list(table["references"])
    head = "| train pool | model | " + " | ".join(
        f"test {t}" for t in tests) + " | in-pool median | out-of-pool median | gap (dB) |"
    lines = [head, "|" + "---|" * (len(tests) + 5)]
    keyed = {}
    for r in table["rows"]:
        keyed.setdefault((r["train_pool"], r["model"]), {})[r["test_soundfont"]] = r
    for (pool, model), cells in keyed.items():
        ins = [c["median_sdr"] for c in cells.values() if c["in_pool"]]
        outs = [c["median_sdr"] for c in cells.values() if not c["in_pool"]]
        fmt = lambda xs: f"{sum(xs) / len(xs):.2f}" if xs else "-"   # noqa: E731
        gap = f"{sum(ins) / len(ins) - sum(outs) / len(outs):.2f}" if ins and outs else "-"
        vals = " | ".join(f"{cells[t]['median_sdr']:.2f}{'' if cells[t]['in_pool'] else ' (out)'}"
                          if t in cells else "-" for t in tests)
        lines.append(f"| {pool} | {'Open-Unmix' if model == 'umx' else 'IASS'} | {vals} | "
                     f"{fmt(ins)} | {fmt(outs)} | {gap} |")
    for name in ("ibm", "input_sdr"):
        vals = " | ".join(f"{table['references'][t].get(name, float('nan')):.2f}" for t in tests)
        lines.append(f"| (reference) | {'IBM' if name == 'ibm' else 'input-SDR'} | {vals} | | | |")
    return ("Median SDR (dB) over every (track, target) of each test soundfont's songs; "
            "(out): the soundfont is not in the training pool.\n\n" + "\n".join(lines) + "\n")
