"""``iass synth-stats``: entrances, exits and segment lengths, real MedleyDB vs synthesized songs."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from iass.config import add_params_arguments

    p = sub.add_parser(
        "synth-stats",
        help="arrangement statistics of synthesized songs vs MedleyDB's real annotations",
        description=(
            "Per separation target: the share of fully active 1 s windows among the windows where\n"
            "it sounds, the share of active frames, entrances per minute and the distribution of\n"
            "active-segment lengths, for MedleyDB's own activation annotations (264 tracks, from\n"
            "the medleydb-instruments wheel, binarised at 0.5) and for each DIR: a built corpus\n"
            "(its activity tables: the labels a model trains on) or a source tree such as `iass\n"
            "synth` output (its shipped labels, or --labels audio: activation confidence from the\n"
            "stems with params.yaml corpus.labels, as the corpus build computes it).\n\n"
            "examples:\n"
            "  iass synth-stats datasets/corpus --out reports/arrangements\n"
            "  iass synth-stats real=/tmp/real sparse=/tmp/sparse --labels audio --out reports/arr"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="*", metavar="[NAME=]DIR",
                   help="built corpora or source trees (NAME: the label in the table; default: the folder name)")
    p.add_argument("--out", default=None, help="write arrangement_stats.csv and arrangement_stats.png here")
    p.add_argument("--labels", choices=("shipped", "audio"), default="shipped",
                   help="source trees: their shipped labels (default) or activation confidence from audio")
    p.add_argument("--source", default=None,
                   help="adapter of the source trees (default: from iass_synth.json, else medleydb)")
    p.add_argument("--no-reference", action="store_true", help="leave MedleyDB's annotations out")
    p.add_argument("--lab-smoothing", action="store_true",
                   help="only measure the low-pass cutoff of MedleyDB's shipped .lab curves (Hz)")
    add_params_arguments(p, example="corpus.labels.lowpass=0.0375")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from iass.config import load_params, section
    from iass.errors import ConfigError, IassError
    from iass.pipelines.synth.stats import arrangement_report

    if args.lab_smoothing:
        return _lab_smoothing()
    params = load_params(args.params, args.overrides)
    corpus = section(params, "corpus")
    datasets = {}
    for item in args.dirs:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name or item, item
        if name in datasets:
            raise ConfigError(f"synth-stats: two datasets named {name!r}; name them NAME=DIR")
        datasets[name] = path
    if not datasets and args.no_reference:
        raise ConfigError("synth-stats: nothing to measure (no DIR and --no-reference)")
    try:
        result = arrangement_report(
            datasets, args.out, labels=args.labels, source=args.source,
            hop=int(corpus.get("hop", 1024)), sr=int(corpus.get("sample_rate", 44100)),
            params=corpus.get("labels") or {}, reference=not args.no_reference)
    except OSError as exc:
        raise IassError(f"synth-stats: {exc}") from exc
    for name, what in result["read"].items():
        print(f"{name}: {what}")
    print()
    print(result["table"])
    for f in result["files"]:
        print(f"wrote {f}")
    return 0


def _lab_smoothing() -> int:
    from iass.pipelines.synth.stats import lab_smoothing

    r = lab_smoothing()
    print(f"MedleyDB .lab: {r['curves']} confidence stretches, frame rate {r['frame_rate']:.2f} Hz")
    print("spectrum of the logit-inverted confidence (dB re 0.08 Hz): " + ", ".join(
        f"{r['freq'][k]:.2f} Hz {r['psd_db'][k]:.1f}"
        for k in [int(abs(r['freq'] - x).argmin()) for x in (0.4, 0.8, 1.6, 3.2)]))
    for fit in r["fits"]:
        best = fit is r["best"]
        if round(fit["cutoff_hz"] * 100) % 10 == 0 or best:   # every 0.1 Hz, and the best
            print(f"  cutoff {fit['cutoff_hz']:.2f} Hz: rms error {fit['rms_db']:.2f} dB, "
                  f"source spectrum ~ f^{-fit['alpha']:+.2f}{'  <- best' if best else ''}")
    return 0
