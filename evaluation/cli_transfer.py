"""``iass transfer``: the cross-renderer experiment (train on a soundfont pool, test outside it)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from iass.pipelines.synth.soundfonts import DEFAULT_POOL

    p = sub.add_parser(
        "transfer",
        help="train on songs of one soundfont pool, evaluate on songs of soundfonts in and out of it",
        description=(
            "Cross-renderer transfer. Synthesizes the same songs through each training pool and\n"
            "other songs through each test soundfont, builds the corpora, trains every model on\n"
            "every pool (equal steps) and evaluates every run on every test soundfont: median SDR\n"
            "in the pool vs out of it, beside the IBM and input-SDR of each soundfont's songs.\n"
            "Steps are ordinary iass commands (written to OUT/commands.sh); a finished step is\n"
            "not redone. Defaults: leave-one-soundfont-out in the default pool, e.g.\n"
            "  iass transfer --out runs/transfer\n"
            "  iass transfer --out x --train-pool timgm6mb --train-pool timgm6mb merlin \\\n"
            "      --test-soundfont timgm6mb merlin ~/soundfonts/FluidR3_GM.sf2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="working folder (songs, corpora, runs, reports, table)")
    p.add_argument("--train-pool", dest="train_pools", action="append", nargs="+",
                   metavar="NAME|PATH",
                   help="one training pool (repeatable); default: each default soundfont alone and "
                        f"both ({' '.join(DEFAULT_POOL)})")
    p.add_argument("--test-soundfont", dest="test_soundfonts", action="extend", nargs="+",
                   metavar="NAME|PATH", help=f"test soundfonts (default: {' '.join(DEFAULT_POOL)})")
    p.add_argument("--tracks", type=int, default=24, help="songs per training pool (default 24)")
    p.add_argument("--test-tracks", type=int, default=12, help="songs per test soundfont (default 12)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per song (default 20)")
    p.add_argument("--seed", type=int, default=0, help="training songs: seed; test songs: seed + 1")
    p.add_argument("--max-steps", type=int, default=200, help="training steps of every run (default 200)")
    p.add_argument("--models", nargs="+", default=["iass", "umx"], choices=["iass", "umx"])
    p.add_argument("--params", default=None,
                   help="params file for corpus, train, model, evaluate (default experiments/transfer/params.yaml)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param of --params, e.g. -S train.chunk_seconds=2 (repeatable)")
    p.add_argument("--workers", type=int, default=0, help="synth processes (default 0 = all cores)")
    p.set_defaults(func=run)


def run(args) -> int:
    from iass.evaluation.transfer import DEFAULT_PARAMS, TransferConfig, markdown, run_transfer
    from iass.pipelines.synth.soundfonts import DEFAULT_POOL

    pools = args.train_pools or [[n] for n in DEFAULT_POOL] + [list(DEFAULT_POOL)]
    cfg = TransferConfig(out=args.out, train_pools=pools,
                         test_soundfonts=args.test_soundfonts or list(DEFAULT_POOL),
                         tracks=args.tracks, test_tracks=args.test_tracks, duration=args.duration,
                         seed=args.seed, max_steps=args.max_steps, models=tuple(args.models),
                         params=args.params or str(DEFAULT_PARAMS), workers=args.workers,
                         overrides=list(args.overrides))
    table = run_transfer(cfg)
    print(markdown(table), end="")
    print(f"transfer: {len(table['rows'])} scores in {table['wall_seconds']:.0f} s -> {args.out}")
    return 0
