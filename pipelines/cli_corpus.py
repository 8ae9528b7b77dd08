"""``iass corpus build|info|validate|report``: thin wrappers over pipelines.build, pipelines.corpus_check
and pipelines.corpus_report."""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    corpus = sub.add_parser(
        "corpus", help="build, describe and check the versioned multitrack corpus",
        description="Build the corpus from the source corpora (a Prefect flow), describe it, or "
                    "verify it against its checksums and version.")
    csub = corpus.add_subparsers(dest="corpus_command", metavar="ACTION")

    b = csub.add_parser(
        "build", help="harmonize, label and write the corpus (incremental, cached)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the Prefect flow build_corpus: discover -> read + validate -> harmonize -> label\n"
            "-> write, then the split guard, the tables and manifest.json.\n"
            "A re-run with nothing changed does no audio work; changed label params only relabel.\n"
            "Bad tracks are quarantined in rejects.parquet (--strict: the build fails instead).\n"
            "Runs offline on Prefect's embedded server (PREFECT_HOME=<repo>/.prefect); set\n"
            "PREFECT_API_URL to report to your own Prefect server."))
    b.add_argument("--params", default=None, help="params.yaml (default: the repository's)")
    b.add_argument("--source", action="append", default=[], metavar="NAME=PATH",
                   help="a source corpus root (medleydb, mixing_secrets, musdb, synth); repeat. "
                        "When given, these replace params.yaml `sources:`")
    b.add_argument("-o", "--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="adapter option of a source (a `layout:` key of datasets/sources/NAME.yaml), "
                        "e.g. medleydb.metadata_dir=/src/medleydb/medleydb/data/Metadata; adds to "
                        "or overrides the options in params.yaml `sources:`")
    b.add_argument("--out", default=None, help="corpus directory (default: corpus.out)")
    b.add_argument("--strict", action="store_true", default=None,
                   help="any rejected track fails the build (exit 1, no tables written) "
                        "instead of being quarantined in rejects.parquet")
    b.add_argument("--runner", choices=("threads", "processes", "dask"), default=None,
                   help="Prefect task runner (default: corpus.runner)")
    b.add_argument("--dask-address", default=None, metavar="ADDR",
                   help="scheduler of an existing Dask cluster (default: a LocalCluster)")
    b.add_argument("--workers", type=int, default=None, help="parallel tracks (default: corpus.workers)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)

    i = csub.add_parser("info", help="tracks per source and split, hours, instruments")
    i.add_argument("dir", help="corpus directory")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_info)

    v = csub.add_parser("validate", help="check schemas, audio checksums and the corpus version")
    v.add_argument("dir", help="corpus directory")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=_validate)

    r = csub.add_parser(
        "report", help="a static HTML page of the corpus: hours, activity, rejects, players",
        description="Write <out>/index.html (with assets/ beside it; no server, nothing from the "
                    "network): hours per source, split and instrument, the active share per "
                    "instrument, the rejected tracks with their reasons, and a few tracks with "
                    "players for the mixture and each stem, the stem's activity labels drawn over "
                    "its spectrogram.")
    r.add_argument("dir", help="corpus directory")
    r.add_argument("--out", default="reports/corpus", help="report directory (default: %(default)s)")
    r.add_argument("--tracks", type=int, default=4,
                   help="tracks with players, in turn from each source (default: %(default)s)")
    r.add_argument("--track", action="append", default=None, metavar="TRACK_ID",
                   help="a track to show (repeatable; instead of --tracks)")
    r.set_defaults(func=_report)
    corpus.set_defaults(func=lambda args: (corpus.print_help(), 2)[1])


def _parse_sources(items: list[str], options: list[str] = (), params: dict | None = None,
                   base_dir=None):
    """The sources to build: ``--source NAME=PATH`` items (else params.yaml ``sources:``) plus
    ``--option NAME.KEY=VALUE``; resolved specs (raises SourceError naming the source and key)."""
    from iass.pipelines.sources.resolve import resolve_sources

    return resolve_sources((params or {}).get("sources"), base_dir=base_dir, items=items,
                           options=options)


def _build(args) -> int:
    from pathlib import Path

    from iass.config import DEFAULT_PARAMS, load_params
    from iass.log import progress_enabled
    from iass.pipelines.build import config_from_params, run_build

    params = load_params(args.params)
    base_dir = Path(args.params or DEFAULT_PARAMS).resolve().parent
    sources = _parse_sources(args.source, args.option, params, base_dir)
    cfg = config_from_params(params, sources=sources, out=args.out,
                             strict=args.strict, runner=args.runner,
                             dask_address=args.dask_address, workers=args.workers,
                             progress=not args.no_progress and progress_enabled(),
                             base_dir=base_dir)
    result = run_build(cfg)  # a BuildError (one line) is printed by iass.cli.main, exit 1
    print(result["summary"])
    return 0


def _info(args) -> int:
    from iass.pipelines.corpus_check import corpus_info

    try:
        info = corpus_info(args.dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"corpus {info['corpus_version'][:12]} (format {info['format_version']}, hop "
          f"{info['hop']}): {info['tracks']} tracks, {info['hours']:.2f} h, "
          f"{info['rejects']} rejected, {info['duplicates']} duplicate group(s)")
    print(f"{'source':<16}{'split':<8}{'tracks':>7}{'hours':>9}")
    for r in info["by_source_split"]:
        print(f"{r['source']:<16}{r['split']:<8}{r['tracks']:>7}{r['hours']:>9.3f}")
    print(f"{'instrument':<18}{'tracks':>7}{'active':>9}{'unknown in':>12}")
    names = sorted(set(info["instruments"]) | set(info["unknown_in_tracks"]))
    for name in names:
        s = info["instruments"].get(name, {"tracks": 0, "active_fraction": None})
        frac = "-" if s["active_fraction"] is None else f"{s['active_fraction']:.3f}"
        print(f"{name:<18}{s['tracks']:>7}{frac:>9}{info['unknown_in_tracks'].get(name, 0):>12}")
    print("pitch labels: " + (", ".join(f"{i} {n}" for i, n in info["pitch"].items()) + " (tracks)"
                              if info["pitch"] else "none"))
    return 0


def _report(args) -> int:
    from iass.pipelines.corpus_report import write_corpus_report
    from iass.pipelines.html_media import dir_size

    # a directory that is not a built corpus: CorpusError, `error: ...` exit 1 from iass.cli.main
    index = write_corpus_report(args.dir, args.out, tracks=args.tracks, track_ids=args.track)
    print(f"report: {index} ({dir_size(index.parent) / 1e6:.1f} MB with its assets)")
    return 0


def _validate(args) -> int:
    from iass.pipelines.corpus_check import validate_corpus

    problems = validate_corpus(args.dir, progress=not args.no_progress)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"corpus {args.dir}: INVALID ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    print(f"corpus {args.dir}: valid (schemas, checksums and corpus version agree)")
    return 0
