"""``iass synth``: write procedural multitrack songs in a real corpus layout."""
from __future__ import annotations

import argparse

LAYOUT_HELP = {
    "medleydb": "<Id>/<Id>_METADATA.yaml, _MIX.wav, _STEMS/, _ACTIVATION_CONF.lab",
    "mixing_secrets": "the same, origin 'Mixing Secrets', its stem naming",
    "musdb-hq": "{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav",
    "musdb-stems": "{train,test}/<Artist - Title>.stem.mp4 (AAC)",
    "native": "<id>/mixture.wav, stems/<instrument>.wav, notes.parquet, track.json (source 'synth')",
}


def add_parser(sub) -> None:
    from iass.pipelines.synth.compose import INSTRUMENTS
    from iass.pipelines.synth.soundfonts import BUILTIN, DEFAULT_POOL

    layouts = "\n".join(f"  {k:15s} {v}" for k, v in LAYOUT_HELP.items())
    p = sub.add_parser(
        "synth",
        help="synthesize multitrack songs (stems + exact activity) in a corpus layout",
        description=(
            "Compose procedural songs (sections, chords, drums, bass, comping, a lead melody and\n"
            "distractor instruments that enter and drop out), render each instrument to its own\n"
            "44.1 kHz stereo stem with a General MIDI soundfont that each part draws from a pool\n"
            "(--soundfont), and write them in the on-disk layout of a real corpus so its adapter\n"
            "ingests them unchanged. The mixture is the exact sum of the stems (except AAC in\n"
            "musdb-stems); exact note times are the labels; every stem's metadata names its\n"
            "soundfont (file, sha256) and GM program. Same seed, arguments and pool give\n"
            "byte-identical files.\n\n"
            f"layouts:\n{layouts}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--layout", required=True, choices=list(LAYOUT_HELP), help="on-disk layout")
    p.add_argument("--tracks", type=int, default=8, help="number of songs (default 8)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per song (default 20)")
    p.add_argument("--seed", type=int, default=0, help="song i depends on (seed, i) only (default 0)")
    p.add_argument("--instruments", nargs="+", metavar="NAME", choices=list(INSTRUMENTS),
                   help=f"fixed line-up for every song (default: a random band); from {', '.join(INSTRUMENTS)}")
    p.add_argument("--soundfont", action="extend", nargs="+", metavar="NAME|PATH",
                   help="the soundfont pool each part draws from (repeatable): builtin "
                        f"{' / '.join(BUILTIN)} or any .sf2/.sf3 file (default: {' '.join(DEFAULT_POOL)})")
    p.add_argument("--arrangement", choices=["real", "sparse"], default="real",
                   help="real (default): entrances, exits and section lengths shaped like real "
                        "multitracks; sparse: every instrument enters and drops out often")
    p.add_argument("--workers", type=int, default=0, help="processes (default 0 = all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    """Bad options raise :class:`~iass.errors.ConfigError`, which ``iass.cli.main`` prints as one
    line (exit 1); so does an OS error (unwritable ``--out``, full disk, missing binary)."""
    from iass.errors import IassError
    from iass.log import progress_enabled
    from iass.pipelines.synth.generate import synthesize

    try:
        s = synthesize(args.out, args.layout, args.tracks, args.duration, args.seed,
                       args.instruments, args.workers,
                       progress=not args.no_progress and progress_enabled(),
                       soundfonts=args.soundfont, arrangement=args.arrangement)
    except OSError as exc:
        raise IassError(f"synth: {exc}") from exc
    splits = "".join(f", {n} {k}" for k, n in s["splits"].items())
    print(f"synth: {s['songs']} songs ({s['audio_seconds']:.0f} s of mixture, "
          f"{s['stem_seconds']:.0f} s of stems{splits}) in layout {s['layout']} -> {s['out']} "
          f"with {' + '.join(s['soundfonts'])} "
          f"in {s['wall_seconds']:.1f} s on {s['workers']} workers "
          f"({s['realtime_factor']:.1f}x real time)")
    return 0
