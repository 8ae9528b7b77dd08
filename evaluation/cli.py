"""``iass evaluate``, ``iass separate`` and ``iass report show``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iass.config import add_params_arguments

EVALUATE_EPILOG = """\
examples:
  iass evaluate --corpus datasets/corpus --run runs/iass --run runs/umx --out reports/evaluate
  iass evaluate --corpus datasets/corpus --run runs/iass --weighting soft --wiener --workers 4

An IASS run is scored with activity weighting (--weighting, default from params.yaml
evaluate.weighting) and without; an Open-Unmix run as is; the ideal binary mask (IBM) and the
mixture itself (input-SDR) are scored on the same tracks and windows; --oracle-gate adds
each IASS run gated by the corpus' own activity labels (a perfect detector's gate). Writes results.parquet,
activity.parquet, summary.md, sdr_boxplot.png and metrics.json into --out.
"""

SEPARATE_EPILOG = """\
examples:
  iass separate song.mp3 --run runs/iass --out separated/song
  iass separate song.flac --run runs/iass --out separated/song --weighting none --wiener
  iass separate "Artist - Title.stem.mp4" --run runs/iass --out separated/title  (the mixture stream)

Writes <target>.wav (float WAV at the model's rate) per target and, for an IASS run,
activity.csv / activity.parquet (per frame: time, probability and the applied decision).
"""

SEEDS_EPILOG = """\
example (what `make seeds` runs after `make demo`):
  iass train --model iass --corpus datasets/corpus --run-dir runs/seed7/iass -S train.seed=7
  iass train --model umx --corpus datasets/corpus --run-dir runs/seed7/umx -S train.seed=7
  iass evaluate --corpus datasets/corpus --run runs/seed7/iass --run runs/seed7/umx --out reports/seed7
  iass report seeds seed42=reports/evaluate seed7=reports/seed7 --out reports/seeds
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score runs on a corpus split against IBM and input-SDR",
        description="Separate every track of a corpus split with each run, score SDR/SIR/SAR/ISR "
                    "(BSS Eval v4, museval-compatible) and activity detection, and write a report.",
        epilog=EVALUATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--corpus", required=True, help="built corpus directory (has manifest.json)")
    p.add_argument("--run", dest="runs", action="append", default=[], metavar="RUN_DIR",
                   help="a training run directory (repeatable); none = the references only")
    p.add_argument("--split", default=None, help="corpus split to score (default: evaluate.split)")
    p.add_argument("--out", default="reports/evaluate", help="report directory (default: %(default)s)")
    _separation_options(p)
    p.add_argument("--threshold-split", default=None, metavar="SPLIT",
                   help="tune each IASS run's per-target activity thresholds on this held-out split "
                        "(default: evaluate.threshold_split)")
    p.add_argument("--threshold-metric", choices=["sdr", "safe", "f1"], default=None,
                   help="how thresholds are tuned: sdr = the gate that separates best (0 = no "
                        "weighting for that target; ties: no weighting), safe = the same but ties "
                        "go to the threshold nearest 0.5 (the paper's gate where it costs nothing), "
                        "f1 = the best detector (default: evaluate.threshold_metric)")
    p.add_argument("--oracle-gate", action="store_true", default=None,
                   help="also score each IASS run's masks gated by the corpus' activity labels: "
                        "what a perfect detector's gate would give (default: evaluate.oracle_gate)")
    p.add_argument("--figure", choices=["fig3", "fig4"], default=None,
                   help="figure.png in the paper's layout: fig3 = SDR/SIR/SAR/ISR box plots per "
                        "target, fig4 = median SDR per instrument (default: evaluate.figure, fig4)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel track workers (default: evaluate.workers)")
    p.add_argument("--targets", nargs="+", default=None, help="targets to score (default: the runs')")
    p.add_argument("--limit", type=int, default=None, help="score only the first N tracks")
    add_params_arguments(p, "evaluate.chunk_seconds=10")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate)
    _add_separate(sub)
    _add_report(sub)


def _add_separate(sub) -> None:
    s = sub.add_parser(
        "separate", help="separate an audio file (WAV/FLAC/MP3/M4A/...) with a trained run",
        description="Separate any audio file ffmpeg decodes (WAV, FLAC, MP3, OGG, M4A/AAC, MP4; "
                    "of a MUSDB .stem.mp4 its mixture) into the run's targets (resampled to the "
                    "model's rate; mono is duplicated), in chunks with bounded memory.",
        epilog=SEPARATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("audio", help="input audio file")
    s.add_argument("--run", required=True, metavar="RUN_DIR", help="training run directory")
    s.add_argument("--out", required=True, help="output directory")
    _separation_options(s)
    add_params_arguments(s)
    s.set_defaults(func=run_separate)


def _add_report(sub) -> None:
    r = sub.add_parser("report", help="show an evaluation report, or combine several over seeds",
                       description="Work with the report written by `iass evaluate`.")
    rsub = r.add_subparsers(dest="report_command", metavar="COMMAND")
    show = rsub.add_parser("show", help="print summary.md of an evaluation directory")
    show.add_argument("dir", nargs="?", default="reports/evaluate", help="default: %(default)s")
    show.set_defaults(func=run_report_show)
    seeds = rsub.add_parser(
        "seeds", help="one comparison over several training seeds (reports of `iass evaluate`)",
        description="Median SDR per target and method over several evaluation reports (one per "
                    "training seed, same corpus split), how often each model is ahead, and a "
                    "paired Wilcoxon test over tracks. Writes seeds.md and seeds.json.",
        epilog=SEEDS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    seeds.add_argument("reports", nargs="+", metavar="[NAME=]DIR",
                       help="evaluation report directories (at least two)")
    seeds.add_argument("--out", default="reports/seeds", help="default: %(default)s")
    seeds.set_defaults(func=run_report_seeds)
    page = rsub.add_parser(
        "html", help="(re)render html/index.html of an evaluation directory",
        description="The evaluation as a static page to open in a browser (no server, nothing "
                    "from the network): the median tables and, per track, an excerpt with players "
                    "and spectrograms of the mixture, each target's reference and every method's "
                    "estimate, the predicted activity with the gate's threshold and the corpus "
                    "labels, and the track's SDR / SIR / PES. `iass evaluate` writes it too; this "
                    "renders it again from the excerpts it saved (html/assets), without separating.")
    page.add_argument("dir", nargs="?", default="reports/evaluate", help="default: %(default)s")
    page.set_defaults(func=run_report_html)
    r.set_defaults(func=lambda args: (r.print_help(), 2)[1])


def _separation_options(p) -> None:
    p.add_argument("--weighting", choices=["none", "hard", "soft"], default=None,
                   help="activity weighting of the masks (default: evaluate.weighting)")
    p.add_argument("--threshold", type=float, default=None, help="activity threshold (default: evaluate.threshold)")
    p.add_argument("--median-frames", type=int, default=None,
                   help="median filter length in frames, odd (default: evaluate.median_frames)")
    p.add_argument("--wiener", action="store_true", default=None,
                   help="multichannel Wiener post-filter (default: evaluate.wiener)")
    p.add_argument("--chunk-seconds", type=float, default=None,
                   help="separation chunk length (default: evaluate.chunk_seconds)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    p.add_argument("--checkpoint", default="best", help="best | last | path to a .pt (default: best)")


def _sep_overrides(args) -> dict:
    return {"weighting": args.weighting, "threshold": args.threshold,
            "median_frames": args.median_frames, "wiener": args.wiener,
            "chunk_seconds": args.chunk_seconds}


def run_evaluate(args) -> int:
    from iass.config import load_params
    from iass.evaluation.evaluate import config_from_params, evaluate

    params = load_params(args.params, args.overrides)
    try:
        config = config_from_params(
            params, **_sep_overrides(args), split=args.split, workers=args.workers,
            device=args.device, checkpoint=args.checkpoint, threshold_split=args.threshold_split,
            threshold_metric=args.threshold_metric, oracle_gate=args.oracle_gate,
            figure=args.figure, targets=tuple(args.targets) if args.targets else None, limit=args.limit)
    except ValueError as exc:
        print(f"iass evaluate: {exc}", file=sys.stderr)
        return 2
    evaluate(args.corpus, args.runs, args.out, config, progress=not args.quiet)
    return 0


def run_separate(args) -> int:
    from iass.config import load_params
    from iass.errors import IassError
    from iass.evaluation.evaluate import _load
    from iass.evaluation.separate import SeparationConfig, separate_file
    from iass.pipelines.audio import check_file

    params = load_params(args.params)
    try:
        config = SeparationConfig.from_params(dict(params.get("evaluate") or {}), **_sep_overrides(args))
    except ValueError as exc:
        print(f"iass separate: {exc}", file=sys.stderr)
        return 2
    check_file(args.audio)         # an unusable input fails before the model is loaded
    separator = _load(args.run, args.device, args.checkpoint)
    try:
        summary = separate_file(args.audio, separator, args.out, config)
    except ValueError as exc:
        if isinstance(exc, IassError):
            raise                  # an unreadable input: `error: <file>: <why>` from iass.cli.main
        print(f"iass separate: {exc}", file=sys.stderr)
        return 1
    notes = f" ({'; '.join(summary['notes'])})" if summary["notes"] else ""
    print(f"separated {args.audio}: {summary['seconds']:.1f} s into {len(summary['targets'])} targets "
          f"-> {args.out}{notes}")
    print(json.dumps(summary["files"], indent=1))
    return 0


def run_report_seeds(args) -> int:
    from iass.evaluation.seeds import SEEDS_SUMMARY, write_seeds_report

    try:
        write_seeds_report(args.reports, args.out)
    except ValueError as exc:
        print(f"iass report seeds: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write((Path(args.out) / SEEDS_SUMMARY).read_text())
    print(f"report: {Path(args.out) / SEEDS_SUMMARY}")
    return 0


def run_report_html(args) -> int:
    from iass.evaluation.html_report import render
    from iass.pipelines.html_media import dir_size

    index = render(args.dir)        # a ConfigError (no report there): `error: ...`, exit 1
    print(f"report: {index} ({dir_size(index.parent) / 1e6:.1f} MB with its assets)")
    return 0


def run_report_show(args) -> int:
    from iass.evaluation.report import show

    sys.stdout.write(show(args.dir))
    return 0
