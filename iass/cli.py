"""The one command line, ``iass``. Each subcommand is a thin wrapper over a library function.

Subcommand modules register themselves with ``add_parser(subparsers)`` and keep heavy imports
(torch, prefect) inside their handlers so that ``iass --help`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: module (relative to the package) -> owns these top-level subcommands
COMMAND_MODULES = [
    "iass.pipelines.cli_sources",   # iass sources list|check
    "iass.pipelines.synth.cli",     # iass synth
    "iass.pipelines.synth.cli_stats",  # iass synth-stats
    "iass.pipelines.cli_corpus",    # iass corpus build|info|validate
    "iass.training.cli",            # iass train
    "iass.evaluation.cli",          # iass evaluate, iass separate, iass report
    "iass.evaluation.cli_transfer", # iass transfer
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iass",
        description=(
            "Instrument-activation-aware source separation: build a versioned multitrack corpus "
            "from MedleyDB, Mixing Secrets, MUSDB18 and synthesized songs; train IASS and "
            "Open-Unmix; evaluate with BSS metrics."
        ),
    )
    from iass import __version__

    parser.add_argument("--version", action="version", version=f"iass {__version__}")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", dest="log_quiet", action="store_true",
                      help="only warnings and errors (no progress bars)")
    loud.add_argument("-v", "--verbose", dest="log_verbose", action="store_true",
                      help="debug output, with the name of the module that logs it")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("iass"):
                continue  # a part not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from iass.errors import IassError
    from iass.log import setup_logging

    # a subcommand's own --quiet (`iass train --quiet`) only hides its progress bars: the
    # validation lines stay, as DVC logs show them; `iass -q` keeps only warnings and errors
    setup_logging(1 if args.log_verbose else -1 if args.log_quiet else 0)
    try:
        rc = args.func(args)
    except IassError as exc:
        # library errors carry one line naming the file / source / key; no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
