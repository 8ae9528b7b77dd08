"""Note events and pitch annotations of a source track -> the corpus' pitch labels.

An adapter lists a track's pitch files as :class:`~iass.pipelines.sources.base.PitchSource` s;
:func:`track_pitch` reads them, maps stems to canonical instruments (as the activity labels do)
and returns the rows of ``pitch.parquet`` (instruments whose pitch is known) and the track's note
events (``NOTES_SCHEMA``). Formats (``PitchSource.kind``):

``notes``
    Note events. Parquet with ``instrument`` (or ``stem``), ``pitch``, ``onset_s``, ``offset_s``
    [, ``velocity``] (the synthesizer's ``notes.parquet``), or CSV with the header
    ``onset,offset,pitch,velocity`` (seconds, MIDI pitch, MIDI velocity; one file per stem, e.g.
    the synthesizer's MedleyDB layout ``<Id>_NOTES/<stem>.csv``), plus a ``stem`` column first when
    one file covers the whole track (MUSDB sidecar ``notes.csv``). A file for the whole track
    covers every stem: a stem without notes is silent (known), not unknown.
``f0``
    MedleyDB's ``Annotations/Pitch/<Id>_STEM_NN.csv``: rows ``time,f0`` (s, Hz), no header,
    monophonic; voiced rows only (f0 > 0; the release omits unvoiced rows, some copies write 0).
    Each voiced row is a cell of one annotation hop centred on its time (the hop: the median
    spacing of the rows, 256 samples at 44.1 kHz in MedleyDB); a run of adjacent rows of the same
    nearest MIDI pitch (``round(69 + 12 log2(f0 / 440))``) is one note, velocity null.

An instrument's pitch is known when every one of its stems is covered; unpitched instruments
(drums: ``corpus_format.UNPITCHED``) get no pitch labels. Bad files raise
:class:`~iass.pipelines.sources.base.TrackError` (the build quarantines the track): a non-numeric
value, a note or f0 row past the end of the audio, a stem id the metadata does not have.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from iass.pipelines import corpus_format as cf
from iass.pipelines.sources.base import PitchSource, SourceTrack, TrackError

#: how far (s) an annotation may run past the end of the audio before it is refused
END_TOLERANCE_S = 0.05
#: MedleyDB's pitch annotation hop (used when a file has a single row)
F0_HOP_S = 256 / 44100

Note = tuple  # (onset_s, offset_s, pitch, velocity | None)


def _num(value: str, path: Path, line: int, what: str, integer: bool = False):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TrackError(path, f"line {line}: non-numeric {what} {str(value).strip()[:20]!r}") from None
    if not math.isfinite(x):
        raise TrackError(path, f"line {line}: non-finite {what} {str(value).strip()!r}")
    if integer:
        if x != int(x):
            raise TrackError(path, f"line {line}: {what} {str(value).strip()!r} is not a whole number")
        return int(x)
    return x


# ------------------------------------------------------------------------------------ readers
def read_note_events(path: str | Path) -> dict[str | None, list[Note]]:
    """Note events of a ``notes`` file: {stem key (None: the file has no stem column): notes}."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return _note_events_parquet(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackError(path, f"unreadable note file ({getattr(exc, 'strerror', None) or exc})") from None
    if not rows:
        raise TrackError(path, "empty note file (expected a header onset,offset,pitch,velocity)")
    header = [h.strip().lower() for h in rows[0]]
    col = {h: i for i, h in enumerate(header)}
    if not {"onset", "offset", "pitch"} <= set(col):
        raise TrackError(path, f"expected a header onset,offset,pitch,velocity; got {','.join(header)}")
    key = next((col[c] for c in ("stem", "stem_id", "instrument") if c in col), None)
    out: dict[str | None, list[Note]] = {}
    for line, r in enumerate(rows[1:], start=2):
        if not r or not any(c.strip() for c in r):
            continue
        if len(r) != len(header):
            raise TrackError(path, f"line {line}: {len(r)} fields, the header has {len(header)}")
        on = _num(r[col["onset"]], path, line, "onset")
        off = _num(r[col["offset"]], path, line, "offset")
        pitch = _num(r[col["pitch"]], path, line, "pitch", integer=True)
        vel = _num(r[col["velocity"]], path, line, "velocity", integer=True) if "velocity" in col else None
        out.setdefault(None if key is None else r[key].strip(), []).append((on, off, pitch, vel))
    return out


def _note_events_parquet(path: Path) -> dict[str | None, list[Note]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise TrackError(path, f"unreadable note labels ({str(exc).splitlines()[0]})") from None
    cols = set(table.column_names)
    key = next((c for c in ("instrument", "stem", "stem_id") if c in cols), None)
    if not key or not {"pitch", "onset_s", "offset_s"} <= cols:
        raise TrackError(path, f"expected columns instrument, pitch, onset_s, offset_s; got {table.column_names}")
    keys = table.column(key).to_pylist()
    vel = table.column("velocity").to_pylist() if "velocity" in cols else [None] * len(keys)
    out: dict[str | None, list[Note]] = {}
    for k, on, off, p, v in zip(keys, table.column("onset_s").to_pylist(),
                                table.column("offset_s").to_pylist(), table.column("pitch").to_pylist(), vel):
        out.setdefault(str(k), []).append((float(on), float(off), int(p), None if v is None else int(v)))
    return out


def read_f0(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A MedleyDB pitch annotation: (times s, f0 Hz), rows ``time,f0`` (a header row is skipped)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackError(path, f"unreadable pitch annotation ({getattr(exc, 'strerror', None) or exc})") from None
    start = 1 if rows and rows[0][0].strip().lower() in ("time", "t", "times") else 0
    times, f0 = [], []
    for line, r in enumerate(rows[start:], start=start + 1):
        if len(r) < 2:
            raise TrackError(path, f"line {line}: expected time,f0")
        times.append(_num(r[0], path, line, "time"))
        f0.append(_num(r[1], path, line, "f0"))
        if len(times) > 1 and times[-1] <= times[-2]:
            raise TrackError(path, f"line {line}: time {times[-1]} does not increase")
    return np.asarray(times, dtype=np.float64), np.asarray(f0, dtype=np.float64)


def f0_notes(times: np.ndarray, f0: np.ndarray) -> list[Note]:
    """Voiced rows -> notes of the nearest MIDI pitch (see the module doc)."""
    voiced = f0 > 0
    t, f = times[voiced], f0[voiced]
    if not len(t):
        return []
    d = np.diff(times)
    hop = float(np.median(d[d > 0])) if np.any(d > 0) else F0_HOP_S
    midi = np.rint(69 + 12 * np.log2(f / 440.0)).astype(np.int64)
    # a new note where the pitch changes or the rows are not adjacent (an unvoiced gap)
    brk = np.flatnonzero((np.diff(midi) != 0) | (np.diff(t) > 1.5 * hop)) + 1
    starts = np.concatenate([[0], brk])
    stops = np.concatenate([brk, [len(t)]]) - 1
    return [(max(float(t[a]) - hop / 2, 0.0), float(t[b]) + hop / 2, int(midi[a]), None)
            for a, b in zip(starts, stops)]


# --------------------------------------------------------------------------------- the track
def track_pitch(track: SourceTrack, track_id: str, source_stems: Mapping[str, Sequence[str]],
                num_samples: int, sample_rate: int, taxonomy) -> tuple[list[dict], object]:
    """(``pitch.parquet`` rows, ``NOTES_SCHEMA`` table) of one track; ([], empty) without pitch
    sources. ``source_stems``: canonical instrument -> the stem ids summed into it."""
    import pyarrow as pa

    if not track.pitch_sources:
        return [], cf.NOTES_SCHEMA.empty_table()
    stem_ids = {s.stem_id for s in track.stems}
    duration = num_samples / sample_rate
    by_stem: dict[str, list[Note]] = {}
    method_of: dict[str, str] = {}
    for src in track.pitch_sources:
        events = _read_source(src, duration)
        for key, notes in events.items():
            stem = src.stem_id if src.stem_id is not None else key
            if stem not in stem_ids:
                raise TrackError(src.path, f"pitch annotation for stem {stem!r}, not a stem of the "
                                           f"track's metadata (stems: {', '.join(sorted(stem_ids))})")
            _check_notes(src.path, notes, duration)
            by_stem.setdefault(stem, []).extend(notes)
        covered = stem_ids if src.stem_id is None else {src.stem_id}
        for stem in covered:
            method_of[stem] = "medleydb_f0" if src.kind == "f0" else "notes"
    pitch_rows, cols = [], {c: [] for c in ("onset_s", "offset_s", "pitch", "velocity", "instrument")}
    for inst in sorted(source_stems):
        stems = list(source_stems[inst])
        if cf.is_unpitched(taxonomy, inst) or not all(s in method_of for s in stems):
            continue
        notes = sorted((n for s in stems for n in by_stem.get(s, [])), key=lambda n: n[:3])
        methods = sorted({method_of[s] for s in stems})
        pitch_rows.append({"track_id": track_id, "instrument": inst, "method": "+".join(methods),
                           "num_notes": len(notes)})
        for on, off, p, v in notes:
            for c, x in zip(("onset_s", "offset_s", "pitch", "velocity", "instrument"), (on, off, p, v, inst)):
                cols[c].append(x)
    table = pa.table({
        "track_id": pa.array([track_id] * len(cols["pitch"]), pa.string()),
        "instrument": pa.array(cols["instrument"], pa.string()),
        "onset_s": pa.array(cols["onset_s"], pa.float64()),
        "offset_s": pa.array(cols["offset_s"], pa.float64()),
        "pitch": pa.array(cols["pitch"], pa.int16()),
        "velocity": pa.array(cols["velocity"], pa.int16()),
    }, schema=cf.NOTES_SCHEMA)
    return pitch_rows, table


def _read_source(src: PitchSource, duration: float) -> dict[str | None, list[Note]]:
    if src.kind == "f0":
        times, f0 = read_f0(src.path)
        if len(times) and times.max() > duration + END_TOLERANCE_S:  # unvoiced rows too
            raise TrackError(src.path, f"pitch annotation runs past the audio ({times.max():.3f} s > "
                                       f"{duration:.3f} s)")
        # a last row within the tolerance keeps its note inside it too
        limit = duration + END_TOLERANCE_S
        return {src.stem_id: [(on, min(off, limit), p, v) for on, off, p, v in f0_notes(times, f0)]}
    if src.kind != "notes":
        raise TrackError(src.path, f"unknown pitch annotation kind {src.kind!r}")
    events = read_note_events(src.path)
    if src.stem_id is not None:
        return {src.stem_id: [n for notes in events.values() for n in notes]}
    if None in events:
        raise TrackError(src.path, "a note file for the whole track needs a stem column")
    return events


def _check_notes(path: Path, notes: list[Note], duration: float) -> None:
    for on, off, pitch, vel in notes:
        if off > duration + END_TOLERANCE_S or on > duration + END_TOLERANCE_S:
            raise TrackError(path, f"pitch annotation runs past the audio ({max(on, off):.3f} s > "
                                   f"{duration:.3f} s)")
        if off < on or on < 0:
            raise TrackError(path, f"note [{on}, {off}] s ends before it starts or starts before 0")
        if not 0 <= pitch <= 127 or (vel is not None and not 0 <= vel <= 127):
            raise TrackError(path, f"MIDI pitch {pitch} / velocity {vel} outside 0..127")
