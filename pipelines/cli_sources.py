"""``iass sources list`` and ``iass sources check NAME=PATH ...``.

``check`` runs an adapter's discover -> read -> validate over a source root without building
anything: it counts tracks and stems (per canonical instrument and per source label), prints
every problem on one line naming the file, and exits non-zero when any track fails.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sources",
        help="list the registered source corpora; check a source copy on disk",
        description="The source corpora the corpus is built from (datasets/sources/*.yaml).",
    )
    ssub = p.add_subparsers(dest="sources_command", metavar="SUBCOMMAND")

    p_list = ssub.add_parser("list", help="registered source corpora and their label maps")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.set_defaults(func=cmd_list)

    p_check = ssub.add_parser(
        "check",
        help="discover + read + validate sources without building (non-zero exit on any failure)",
        description=(
            "Discover every track of each NAME=PATH source, read its metadata, map its labels and "
            "check its audio headers (existence, sample rate, channels, length). Prints counts, "
            "per-instrument stem counts and every problem found. Exit status 1 when any track fails."
        ),
    )
    p_check.add_argument("sources", nargs="*", metavar="NAME=PATH",
                         help="e.g. medleydb=/data/MedleyDB/Audio musdb=/data/musdb18hq "
                              "(default: the `sources:` section of params.yaml)")
    p_check.add_argument("--params", default=None, metavar="FILE",
                         help="params.yaml whose `sources:` are checked when no NAME=PATH is given")
    p_check.add_argument("-o", "--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                         help="adapter option overriding the yaml layout, e.g. "
                              "medleydb.metadata_dir=/src/medleydb/medleydb/data/Metadata")
    p_check.add_argument("--decode", action="store_true",
                         help="also decode every track (finds NaN/inf samples; records padding, "
                              "resampling, mono stems); slower")
    p_check.add_argument("--json", action="store_true", help="print the report as JSON")
    p_check.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_check.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_list(args) -> int:
    from iass.pipelines.sources.base import _REGISTRY, source_names
    from iass.pipelines.taxonomy import TaxonomyError, load_label_map

    rows = []
    for name in source_names():
        try:
            lm = load_label_map(name)
            row = {"name": name, "labels": len(lm.labels), "label_map": str(lm.path),
                   "description": lm.description}
        except TaxonomyError as exc:
            row = {"name": name, "labels": 0, "label_map": "", "description": f"ERROR: {exc}"}
        module = _REGISTRY[name].partition(":")[0]
        import importlib.util

        row["adapter"] = module if importlib.util.find_spec(module) else f"{module} (not installed)"
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['labels']:>4} labels  {r['description']}")
        print(f"{'':<{width}}  label map: {r['label_map']}; adapter: {r['adapter']}")
    return 0


def sources_to_check(items: list[str], options: list[str], params_path: str | None) -> list:
    """NAME=PATH items (else the ``sources:`` of the params file, paths relative to its folder)
    plus NAME.KEY=VALUE options -> resolved SourceSpecs (SourceError if any is wrong); the same
    resolver as ``iass corpus build`` (:mod:`iass.pipelines.sources.resolve`)."""
    from iass.config import DEFAULT_PARAMS, load_params
    from iass.pipelines.sources.resolve import resolve_sources

    entries, base_dir = None, None
    if not items:
        path = Path(params_path) if params_path else DEFAULT_PARAMS
        entries = load_params(path).get("sources") or {}
        base_dir = path.resolve().parent
    return resolve_sources(entries, base_dir=base_dir, items=items, options=options,
                           flag="source")


def check_source(name: str, root: Path, options: dict, progress: bool = True, decode: bool = False) -> dict:
    """discover + read + validate one source; a JSON-able report (see ``cmd_check``)."""
    from tqdm import tqdm

    from iass.pipelines.sources.base import TrackError, get_adapter
    from iass.pipelines.taxonomy import TaxonomyError, stem_instrument

    report = {
        "source": name, "root": str(root), "tracks": 0, "valid": 0, "failed": 0, "stems": 0,
        "instruments": {}, "labels": {}, "splits": {}, "mixture_sum_of_stems": 0,
        "activation_conf": 0, "problems": [], "warnings": [],
    }
    adapter = get_adapter(name, **options)
    if not root.is_dir():
        report["problems"].append(f"{root}: source root is not a folder")
        report["failed"] = 1
        return report
    refs = list(adapter.discover(root))
    report["tracks"] = len(refs)
    if not refs:
        report["problems"].append(f"{root}: no {name} track found (see datasets/sources/{name}.yaml)")
        report["failed"] = 1
        return report
    instruments: Counter = Counter()
    labels: Counter = Counter()
    splits: Counter = Counter()
    for ref in tqdm(refs, desc=f"check {name}", unit="track", disable=not progress, file=sys.stderr):
        track = None
        try:
            track = adapter.read(ref)
            problems = adapter.validate(track)
            for stem in track.stems:   # adapters that do not map labels themselves
                if not stem.extra.get("instrument"):
                    stem_instrument(name, stem.labels, ref.native_id)
            if decode and not problems:
                audio = adapter.load(track)
                report["warnings"].extend(f"{ref.native_id}: {w}" for w in audio.warnings[len(track.warnings):])
                del audio
        except (TrackError, TaxonomyError) as exc:
            problems = [str(exc)]
        except Exception as exc:  # a bug or an unforeseen file: report it, go on
            problems = [f"{ref.location}: {type(exc).__name__}: {exc}"]
        if track is not None:
            report["stems"] += len(track.stems)
            for stem in track.stems:
                instrument = stem.extra.get("instrument")
                if not instrument:
                    try:
                        instrument = stem_instrument(name, stem.labels, ref.native_id)
                    except TaxonomyError:
                        instrument = "(unmapped)"   # reported as a problem above
                instruments[instrument] += 1
                labels[stem.labels[0] if stem.labels else ""] += 1
            splits[track.split or "undeclared"] += 1
            report["mixture_sum_of_stems"] += track.mixture_path is None
            report["activation_conf"] += track.activation_conf_path is not None
            report["warnings"].extend(f"{ref.native_id}: {w}" for w in track.warnings)
        if problems:
            report["failed"] += 1
            report["problems"].extend(f"{ref.native_id}: {p}" for p in problems)
        else:
            report["valid"] += 1
    report["instruments"] = dict(sorted(instruments.items(), key=lambda kv: (-kv[1], kv[0])))
    report["labels"] = dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0])))
    report["splits"] = dict(sorted(splits.items()))
    return report


def _print_report(r: dict) -> None:
    print(f"== {r['source']} at {r['root']}")
    print(f"tracks: {r['tracks']} ({r['valid']} valid, {r['failed']} failed); stems: {r['stems']}; "
          f"splits: {r['splits'] or '-'}; mixture = sum of stems: {r['mixture_sum_of_stems']}; "
          f"activation-confidence files: {r['activation_conf']}")
    if r["instruments"]:
        print("stems per canonical instrument: " + ", ".join(f"{k} {v}" for k, v in r["instruments"].items()))
        print("stems per source label: " + ", ".join(f"{k!r} {v}" for k, v in r["labels"].items()))
    for w in r["warnings"]:
        print(f"warning: {w}")
    for p in r["problems"]:
        print(f"problem: {p}")


def cmd_check(args) -> int:
    from iass.errors import IassError
    from iass.log import progress_enabled

    try:
        sources = sources_to_check(args.sources, args.option, args.params)
    except IassError as exc:  # usage: exit 2, as argparse
        print(f"iass sources check: {exc}", file=sys.stderr)
        return 2
    reports = []
    for spec in sources:
        name = spec.name
        try:
            reports.append(check_source(name, spec.path, spec.options,
                                        progress=not args.no_progress and progress_enabled(),
                                        decode=args.decode))
        except (ValueError, ImportError) as exc:  # bad option, adapter not available
            print(f"iass sources check: {name}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for r in reports:
            _print_report(r)
    tracks = sum(r["tracks"] for r in reports)
    valid = sum(r["valid"] for r in reports)
    failed = sum(r["failed"] for r in reports)
    print(f"checked {len(reports)} source(s): {tracks} tracks, {valid} valid, "
          f"{failed} failed", file=sys.stderr if args.json else sys.stdout)
    return 1 if failed else 0
