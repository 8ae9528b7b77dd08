"""The split guard: one song, one split, across every corpus of the build.

Rules, in order of precedence:

1. MUSDB's official split (``train``/``valid``/``test``, declared by its adapter) wins.
2. A split declared in ``params.yaml`` (``corpus.splits.declared: {source: {native_id: split}}``)
   or by a corpus' adapter.
3. Everything else: a seeded, artist-disjoint split. Each artist (normalised name) falls into
   test / valid / train by a hash of (seed, artist), so adding a track never moves another one.
   An artist with songs forced by rules 1-2 takes their (majority) split for its other songs.

Duplicates: two tracks are the same song when they share a normalised artist+title key
(:func:`song_keys`, robust to the corpora's spellings: 'Music Delta - 80s Rock' (MUSDB),
``MusicDelta_80sRock`` (MedleyDB, artist 'Music Delta Multitracks'), 'Actions - One Minute Smile'
(MUSDB) and ``Actions_OneMinuteSmile`` (Mixing Secrets) all meet), or when their mixtures'
audio fingerprints match (:func:`audio_fingerprint`, a Haitsma-Kalker style band-energy sign
code; gain invariant, tolerant to re-encoding and small offsets). A duplicate group lives in one
split; the manifest lists every group.

A corpus need not be in the build for its split to count: a declared split of a song the build
does not hold (``corpus.splits.declared: {musdb: <MUSDB's official split>}`` in a MedleyDB +
Mixing Secrets build without MUSDB audio) becomes a *reference* song (:func:`reference_tracks`).
References take part in the name match and in rules 1-2, so a track of the build that is the
same song takes the reference's split and an artist follows its referenced songs, exactly as if
the other corpus were built; they are matched by name only (no audio), never get a row, and
the manifest's duplicate groups list them with ``"reference": true``.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

SPLITS = ("train", "valid", "test")
PRIORITY = {"musdb": 0}  # lower wins when declared splits of one song disagree


# ------------------------------------------------------------------------------ name normalising
def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().lower()


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text)


def name_variants(text: str) -> set[str]:
    """Spellings of one artist or title that should compare equal, squashed to [a-z0-9].

    Case, spacing and punctuation are dropped ('One Minute Smile' == 'OneMinuteSmile'); '&' is
    tried as 'and' and as nothing ('Jokers, Jacks & Kings' == 'JokersJacksKings'); a trailing
    parenthesis and 'feat.' part are optional ('Once More (With Feeling)' == 'OnceMore');
    a leading 'the' is optional."""
    base = _ascii(text)
    forms = {base}
    forms |= {f.replace("&", " and ") for f in forms} | {f.replace("&", " ") for f in forms}
    forms |= {re.sub(r"\s*[\(\[].*?[\)\]]\s*", " ", f) for f in forms}
    forms |= {re.split(r"\s+(?:feat\.?|ft\.|featuring)\s+", f)[0] for f in forms}
    forms |= {re.sub(r"^\s*the\s+", "", f) for f in forms}
    return {s for s in (_squash(f) for f in forms) if s}


def split_native_id(source: str, native_id: str) -> tuple[str, str]:
    """(artist, title) from a corpus' own id: 'Artist - Title' (MUSDB) or 'Artist_Title' (MedleyDB-style)."""
    if " - " in native_id:
        artist, _, title = native_id.partition(" - ")
        return artist.strip(), title.strip()
    if "_" in native_id:
        artist, _, title = native_id.partition("_")
        return artist, title
    return "", native_id


def song_keys(source: str, native_id: str, artist: str = "", title: str = "") -> list[str]:
    """Normalised 'artist|title' keys of a track, the primary (used as ``song_key``) first.

    Both the metadata names and the names inside the native id are used, because a corpus'
    metadata may spell the artist differently from its id (MedleyDB's MusicDelta_80sRock has
    artist 'Music Delta Multitracks'; Mixing Secrets has no title field at all)."""
    pairs = []
    id_artist, id_title = split_native_id(source, native_id)
    if id_artist:
        pairs.append((id_artist, id_title))
    if artist and title:
        pairs.append((artist, title))
    if not pairs:
        pairs.append((artist, title or native_id))
    keys: list[str] = []
    for a, t in pairs:
        primary = f"{_squash(_ascii(a))}|{_squash(_ascii(t))}"
        if primary not in keys:
            keys.append(primary)
    for a, t in pairs:
        for va in sorted(name_variants(a) or {""}):
            for vt in sorted(name_variants(t)):
                k = f"{va}|{vt}"
                if k not in keys:
                    keys.append(k)
    return keys


def artist_key(source: str, native_id: str, artist: str = "") -> str:
    id_artist, _ = split_native_id(source, native_id)
    return _squash(_ascii(id_artist or artist)) or _squash(_ascii(native_id))


# ----------------------------------------------------------------------------- audio fingerprint
FP_RATE = 11025
FP_FRAME = 4096
FP_HOP = 1024           # 93 ms at 11.025 kHz
FP_BANDS = 17           # 16 bits per frame
FP_SECONDS = 120.0      # the first two minutes are enough to tell songs apart
FP_MAX_SHIFT = 24       # frames (+-2.2 s) searched when comparing
FP_MIN_OVERLAP = 40     # frames
FP_MAX_BER = 0.25       # bit error rate under which two mixtures are the same recording


def audio_fingerprint(mixture: np.ndarray, sample_rate: int) -> str:
    """Hex string of 16-bit sub-fingerprints (one per 93 ms frame) of the mixture's first 120 s.

    Bit m of frame n = sign of (E[n,m] - E[n,m+1]) - (E[n-1,m] - E[n-1,m+1]) over 17 log-spaced
    bands 300-3000 Hz (Haitsma & Kalker 2002), so it ignores gain and survives lossy coding."""
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.signal import resample_poly

    x = np.asarray(mixture, dtype=np.float32)
    x = x[: int(FP_SECONDS * sample_rate)]
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] != 2 else (x[:, 0] + x[:, 1]) * 0.5
    g = np.gcd(int(sample_rate), FP_RATE)
    x = resample_poly(x, FP_RATE // g, int(sample_rate) // g).astype(np.float32)
    if x.shape[0] < FP_FRAME + 2 * FP_HOP:
        return ""
    frames = sliding_window_view(x, FP_FRAME)[::FP_HOP] * np.hanning(FP_FRAME).astype(np.float32)
    spec = np.fft.rfft(frames, axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    freqs = np.fft.rfftfreq(FP_FRAME, 1.0 / FP_RATE)
    edges = np.searchsorted(freqs, np.geomspace(300.0, 3000.0, FP_BANDS + 1))
    # bands are contiguous bin ranges: one reduceat instead of a masked copy per band
    E = np.add.reduceat(power[:, edges[0]:edges[-1]].astype(np.float64), edges[:-1] - edges[0], axis=1)
    d = E[:, :-1] - E[:, 1:]
    bits = (d[1:] - d[:-1]) > 0
    words = (bits.astype(np.uint16) << np.arange(16, dtype=np.uint16)).sum(axis=1).astype("<u2")
    return words.tobytes().hex()


def _words(fp: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(fp), dtype="<u2") if fp else np.zeros(0, "<u2")


def fingerprint_distance(a: str, b: str) -> float:
    """Lowest bit error rate over shifts of up to +-FP_MAX_SHIFT frames (1.0 when incomparable)."""
    wa, wb = _words(a), _words(b)
    best = 1.0
    for s in range(-FP_MAX_SHIFT, FP_MAX_SHIFT + 1):
        x = wa[max(s, 0):]
        y = wb[max(-s, 0):]
        n = min(len(x), len(y))
        if n < FP_MIN_OVERLAP:
            continue
        ber = np.bitwise_count(x[:n] ^ y[:n]).sum() / (16.0 * n)
        best = min(best, float(ber))
    return best


# ---------------------------------------------------------------------------------- the guard
@dataclass
class SplitTrack:
    track_id: str
    source: str
    native_id: str
    artist: str = ""
    title: str = ""
    declared: str | None = None     # split declared by the corpus (MUSDB official) or params
    fingerprint: str = ""
    keys: list[str] = field(default_factory=list)


@dataclass
class SplitResult:
    split: dict[str, str]                 # track_id -> split
    song_key: dict[str, str]              # track_id -> primary key
    duplicates: list[dict]                # one entry per group of 2+ tracks
    reasons: dict[str, str]               # track_id -> why it got its split


class _UnionFind:
    def __init__(self, items: Iterable[str]):
        self.parent = {i: i for i in items}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def _unit_hash(seed: int, key: str) -> float:
    h = hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()[:16]
    return int(h, 16) / float(1 << 64)


def find_duplicates(tracks: Sequence[SplitTrack], use_fingerprint: bool = True,
                    max_ber: float = FP_MAX_BER) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Group tracks that are the same song: (track_id -> group root, {(a, b): 'name'|'audio'})."""
    uf = _UnionFind(t.track_id for t in tracks)
    how: dict[tuple[str, str], str] = {}
    by_key: dict[str, list[str]] = defaultdict(list)
    for t in tracks:
        for k in t.keys or song_keys(t.source, t.native_id, t.artist, t.title):
            by_key[k].append(t.track_id)
    source_of = {t.track_id: t.source for t in tracks}
    for k, ids in by_key.items():
        # names link tracks of DIFFERENT corpora only: inside one corpus the native ids are
        # unique and a shared title is a metadata slip (MedleyDB's Phoenix_ScotchMorris carries
        # the title of Phoenix_LarkOnTheStrandDrummondCastle); audio still catches true repeats
        ids = sorted(set(ids))
        for a in ids:
            for b in ids:
                if a < b and source_of[a] != source_of[b] and uf.find(a) != uf.find(b):
                    how[(a, b)] = f"name:{k}"
                    uf.union(a, b)
    if use_fingerprint:
        fps = [(t.track_id, t.source, t.fingerprint) for t in tracks if t.fingerprint]
        for i in range(len(fps)):
            for j in range(i + 1, len(fps)):
                a, b = fps[i], fps[j]
                if uf.find(a[0]) == uf.find(b[0]):
                    continue
                if fingerprint_distance(a[2], b[2]) <= max_ber:
                    how[tuple(sorted((a[0], b[0])))] = "audio"
                    uf.union(a[0], b[0])
    return {t.track_id: uf.find(t.track_id) for t in tracks}, how


def reference_tracks(declared: Mapping[str, Mapping[str, str]],
                     present: Iterable[tuple[str, str]]) -> list[SplitTrack]:
    """The declared songs the build does not hold, as reference tracks for :func:`assign_splits`.

    ``declared``: ``{source: {native_id: split}}`` (``corpus.splits.declared``); ``present``: the
    (source, native_id) pairs of the build's tracks. Track ids are the corpus' own
    (``corpus_format.make_track_id``), so a reference never collides with a track."""
    from iass.pipelines.corpus_format import make_track_id

    have = set(present)
    out = []
    for source in sorted(declared or {}):
        for native_id, split in sorted((declared[source] or {}).items()):
            if (source, native_id) not in have:
                out.append(SplitTrack(track_id=make_track_id(source, native_id), source=source,
                                      native_id=native_id, declared=split))
    return out


def assign_splits(tracks: Sequence[SplitTrack], seed: int = 0, valid_fraction: float = 0.15,
                  test_fraction: float = 0.2, use_fingerprint: bool = True,
                  song_level_artists: Iterable[str] = (),
                  reference: Sequence[SplitTrack] = ()) -> SplitResult:
    """Apply the split rules of the module docstring to every track of the build.

    ``song_level_artists``: names that are not one act (the synthesizer's 'iass synth', a
    library like 'Music Delta'); their songs are split one by one instead of artist-disjoint,
    which would otherwise put all of them into a single split.

    ``reference``: declared songs of corpora outside the build (:func:`reference_tracks`); they
    bind their duplicates and artists in the build but are not in the result's ``split``,
    ``song_key`` or ``reasons``."""
    own = {t.track_id for t in tracks}
    refs = []
    for r in reference:
        if r.track_id in own:
            continue
        if r.declared is None:
            raise ValueError(f"{r.source}:{r.native_id}: a reference song needs a declared split")
        refs.append(SplitTrack(track_id=r.track_id, source=r.source, native_id=r.native_id,
                               artist=r.artist, title=r.title, declared=r.declared,
                               fingerprint="", keys=list(r.keys)))
    ref_ids = {r.track_id for r in refs}
    tracks = sorted(list(tracks) + refs, key=lambda t: t.track_id)
    for t in tracks:
        if not t.keys:
            t.keys = song_keys(t.source, t.native_id, t.artist, t.title)
        if t.declared is not None and t.declared not in SPLITS:
            raise ValueError(f"{t.source}:{t.native_id}: declared split {t.declared!r} "
                             f"not one of {', '.join(SPLITS)}")
    by_id = {t.track_id: t for t in tracks}
    group_of, how = find_duplicates(tracks, use_fingerprint)
    groups: dict[str, list[str]] = defaultdict(list)
    for tid, g in group_of.items():
        groups[g].append(tid)

    split: dict[str, str] = {}
    reasons: dict[str, str] = {}
    # 1-2: a group with any declared member takes the declared split of highest priority
    for g, ids in groups.items():
        declared = [by_id[i] for i in ids if by_id[i].declared]
        if not declared:
            continue
        winner = min(declared, key=lambda t: (PRIORITY.get(t.source, 1), t.track_id))
        for i in ids:
            split[i] = winner.declared
            reasons[i] = ("declared" if i == winner.track_id
                          else f"same song as {winner.source}:{winner.native_id}")
    # 3: artist-disjoint for the rest; an artist follows its forced songs' majority split
    song_level = {_squash(_ascii(a)) for a in song_level_artists}
    artist_of = {}
    for t in tracks:
        key = artist_key(t.source, t.native_id, t.artist)
        if song_level and (key in song_level or _squash(_ascii(t.artist)) in song_level):
            key = f"song:{group_of[t.track_id]}"
        artist_of[t.track_id] = key
    forced_by_artist: dict[str, Counter] = defaultdict(Counter)
    for i, s in split.items():
        forced_by_artist[artist_of[i]][s] += 1
    # free units: duplicate groups joined with their artists (union over both relations)
    free = [g for g, ids in groups.items() if ids[0] not in split]
    uf = _UnionFind(free)
    first_group_of_artist: dict[str, str] = {}
    for g in free:
        for i in groups[g]:
            a = artist_of[i]
            if a in first_group_of_artist:
                uf.union(first_group_of_artist[a], g)
            else:
                first_group_of_artist[a] = g
    units: dict[str, list[str]] = defaultdict(list)
    for g in free:
        units[uf.find(g)].extend(groups[g])
    unit_split: dict[str, str] = {}
    unit_u: dict[str, float] = {}
    for u, ids in units.items():
        artists = sorted({artist_of[i] for i in ids})
        forced = Counter()
        for a in artists:
            forced.update(forced_by_artist.get(a, Counter()))
        if forced:
            best = max(SPLITS, key=lambda s: (forced[s], -SPLITS.index(s)))
            unit_split[u] = best
            for i in ids:
                reasons[i] = f"artist follows declared songs ({best})"
            continue
        x = _unit_hash(seed, artists[0])
        unit_u[u] = x
        unit_split[u] = "test" if x < test_fraction else ("valid" if x < test_fraction + valid_fraction
                                                          else "train")
        for i in ids:
            reasons[i] = f"seeded artist-disjoint (seed {seed})"
    _fill_empty(unit_split, unit_u, units, valid_fraction, test_fraction)
    for u, ids in units.items():
        for i in ids:
            split[i] = unit_split[u]

    duplicates = []
    for g, ids in sorted(groups.items()):
        if len(ids) < 2:
            continue
        members = sorted(ids)
        links = sorted({v for (a, b), v in how.items() if a in members and b in members})
        if all(i in ref_ids for i in members):
            continue  # references among themselves: nothing of the build is involved
        entries = []
        for i in members:
            entry = {"track_id": i, "source": by_id[i].source, "native_id": by_id[i].native_id,
                     "declared": by_id[i].declared}
            if i in ref_ids:
                entry["reference"] = True   # declared, not in this build
            entries.append(entry)
        duplicates.append({"split": split[members[0]], "tracks": entries, "matched_by": links})
    for i in ref_ids:
        split.pop(i, None)
        reasons.pop(i, None)
    song_key = {t.track_id: t.keys[0] for t in tracks if t.track_id not in ref_ids}
    return SplitResult(split=split, song_key=song_key, duplicates=duplicates, reasons=reasons)


def _fill_empty(unit_split: dict[str, str], unit_u: dict[str, float], units: Mapping[str, list],
                valid_fraction: float, test_fraction: float) -> None:
    """With few artists a hash band can stay empty; move the nearest train unit into it.

    Deterministic (depends only on the units' hashes), and only when 3+ free units exist."""
    if len(unit_u) < 3:
        return
    for name, target, want in (("test", test_fraction / 2, test_fraction),
                               ("valid", test_fraction + valid_fraction / 2, valid_fraction)):
        if want <= 0 or any(unit_split[u] == name for u in unit_u):
            continue
        candidates = [u for u in unit_u if unit_split[u] == "train"]
        if len(candidates) < 2:
            continue
        pick = min(candidates, key=lambda u: (abs(unit_u[u] - target), u))
        unit_split[pick] = name
