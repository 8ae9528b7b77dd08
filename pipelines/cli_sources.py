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


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_sources(pairs: list[str], options: list[str]) -> list[tuple[str, Path, dict]]:
    """NAME=PATH pairs plus NAME.KEY=VALUE options -> [(name, path, options)]; ValueError if bad."""
    from iass.pipelines.sources.base import source_names

    out: list[tuple[str, Path, dict]] = []
    opts: dict[str, dict] = {}
    for item in options:
        key, eq, value = item.partition("=")
        name, dot, opt = key.partition(".")
        if not eq or not dot or not opt:
            raise ValueError(f"option {item!r} must look like NAME.KEY=VALUE")
        opts.setdefault(name, {})[opt] = _parse_value(value)
    for pair in pairs:
        name, eq, path = pair.partition("=")
        if not eq or not path:
            raise ValueError(f"{pair!r} must look like NAME=PATH (sources: {', '.join(source_names())})")
        if name not in source_names():
            raise ValueError(f"unknown source {name!r}; registered: {', '.join(source_names())}")
        out.append((name, Path(path), opts.get(name, {})))
    unused = set(opts) - {n for n, _, _ in out}
    if unused:
        raise ValueError(f"options given for sources not checked: {', '.join(sorted(unused))}")
    return out


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


def sources_from_params(path: str | None) -> tuple[list[str], list[str]]:
    """NAME=PATH pairs from params.yaml ``sources:`` (paths relative to the params file).

    An entry is ``name: path`` or ``name: {path: ..., <adapter option>: ...}``; options become
    ``NAME.KEY=VALUE`` overrides.
    """
    from iass.config import DEFAULT_PARAMS, load_params

    params_path = Path(path) if path else DEFAULT_PARAMS
    entries = load_params(params_path).get("sources") or {}
    pairs, options = [], []
    for name, entry in entries.items():
        if isinstance(entry, dict):
            entry = dict(entry)
            where = entry.pop("path", None)
            options += [f"{name}.{k}={json.dumps(v)}" for k, v in entry.items()]
        else:
            where = entry
        if where is None:
            raise ValueError(f"{params_path}: sources.{name} has no path")
        where = Path(str(where))
        pairs.append(f"{name}={where if where.is_absolute() else params_path.parent / where}")
    if not pairs:
        raise ValueError(f"no NAME=PATH given and {params_path} has no `sources:`")
    return pairs, options


def cmd_check(args) -> int:
    try:
        if not args.sources:
            args.sources, from_params = sources_from_params(args.params)
            args.option = from_params + args.option
        sources = parse_sources(args.sources, args.option)
    except ValueError as exc:
        print(f"iass sources check: {exc}", file=sys.stderr)
        return 2
    reports = []
    for name, root, options in sources:
        try:
            reports.append(check_source(name, root, options, progress=not args.no_progress,
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
