"""``iass train``: train IASS or the Open-Unmix baseline on a built corpus into a run directory."""
from __future__ import annotations

import argparse

from iass.config import add_params_arguments

EPILOG = """\
examples:
  iass train --model iass --corpus datasets/corpus --run-dir runs/iass
  iass train --model umx  --corpus datasets/corpus --run-dir runs/umx --max-steps 100
  iass train --model iass --corpus datasets/corpus --run-dir runs/iass --resume     # after a kill
  torchrun --nproc_per_node 2 -m iass.cli train --model iass --corpus ... --run-dir ...  # DDP

Every knob is in params.yaml (sections stft, train, model); -S key=value overrides one, e.g.
-S train.lr=3e-4 -S model.iass.preset=paper. The run directory gets the resolved params, the
corpus version, the git commit, library versions, checkpoints, metrics.json and history.csv.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train IASS or Open-Unmix on a built corpus",
        description="Train the IASS multitask U-Net (--model iass) or the Open-Unmix baseline "
                    "(--model umx) on a built corpus; the run is versioned and resumable.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, choices=["iass", "umx"], help="which network")
    p.add_argument("--corpus", required=True, help="built corpus directory (has manifest.json)")
    p.add_argument("--run-dir", required=True, help="where the run is written (or resumed from)")
    add_params_arguments(p, "train.lr=3e-4")
    p.add_argument("--targets", nargs="+", default=None,
                   help="targets to separate (default: train.targets)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again in a --run-dir that holds a run")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps budget (default: train.max_steps)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="default: train.device (auto = CUDA when present)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (the validation lines stay; `iass -q train ...` hides them too)")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from iass.config import load_params
    from iass.training.device import is_main_process
    from iass.training.train import summary_line, train

    params = load_params(args.params, args.overrides)
    metrics = train(args.corpus, args.run_dir, args.model, params, targets=args.targets,
                    resume=args.resume, overwrite=args.overwrite, max_steps=args.max_steps,
                    device=args.device, quiet=args.quiet)
    if is_main_process():
        print(summary_line(metrics, args.run_dir), flush=True)
    return 0
