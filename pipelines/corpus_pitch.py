"""The pitch half of :class:`~iass.pipelines.corpus_format.Corpus` (a mixin): the pitch labels
of a built corpus, ``pitch.parquet`` and ``notes/part-<shard>.parquet``, and their piano rolls.
The schemas, the frame convention and :func:`notes_to_roll` are the corpus format's
(:mod:`iass.pipelines.corpus_format`, imported lazily: that module imports this one); this
module only reads them."""
from __future__ import annotations

from functools import cached_property

import numpy as np


class PitchReader:
    """Needs the Corpus attributes ``tables``, ``taxonomy``, ``hop``, ``track``,
    ``target_known`` and ``target_instruments``."""

    _notes_cache: dict

    @cached_property
    def pitch_known(self) -> dict[str, frozenset[str]]:
        """track_id -> the instruments whose pitch is known (rows of ``pitch.parquet``; empty
        when the corpus has no pitch labels at all)."""
        import pyarrow.parquet as pq

        if not self.tables.pitch.exists():
            return {}
        t = pq.read_table(self.tables.pitch, columns=["track_id", "instrument"])
        out: dict[str, set[str]] = {}
        for tid, inst in zip(t.column("track_id").to_pylist(), t.column("instrument").to_pylist()):
            out.setdefault(tid, set()).add(inst)
        return {tid: frozenset(v) for tid, v in out.items()}

    @property
    def has_pitch(self) -> bool:
        """Whether any track of this version has pitch labels."""
        return bool(self.pitch_known)

    def read_notes(self, track_id: str):
        """The track's note events (pyarrow Table, NOTES_SCHEMA; empty when it has none)."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from iass.pipelines import corpus_format as cf

        path = self.tables.notes_part(self.track(track_id)["shard"])
        if track_id not in self.pitch_known or not path.exists():
            return cf.NOTES_SCHEMA.empty_table()
        return pq.read_table(path, filters=pc.field("track_id") == track_id)

    def pitch_target_known(self, track_id: str, target: str) -> bool:
        """Whether :meth:`read_pitch` knows ``target``'s roll in this track: a pitched target
        whose audio the corpus separates, and every instrument of the track under it (those with
        stems) has known pitch. A track without any pitch row knows none."""
        from iass.pipelines.corpus_format import is_unpitched

        known = self.pitch_known.get(track_id)
        if not known or is_unpitched(self.taxonomy, target) or not self.target_known(track_id, target):
            return False
        return all(i in known for i in self.target_instruments(track_id, target))

    def _notes_of(self, track_id: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """instrument -> (onset_s, offset_s, pitch) arrays of the track's notes (bounded cache)."""
        if track_id in self._notes_cache:
            return self._notes_cache[track_id]
        notes = self.read_notes(track_id)
        inst = np.asarray(notes.column("instrument").to_pylist(), dtype=object)
        cols = [notes.column(c).to_numpy() for c in ("onset_s", "offset_s", "pitch")]
        out = {i: tuple(c[inst == i] for c in cols) for i in dict.fromkeys(inst.tolist())}
        if len(self._notes_cache) > 256:
            self._notes_cache.clear()
        self._notes_cache[track_id] = out
        return out

    def read_pitch(self, track_id: str, target: str, start: int = 0,
                   frames: int | None = None) -> np.ndarray | None:
        """THE pitch contract (evaluation and the loader read through it): the piano roll of
        ``target`` (any taxonomy node: the union of its instruments' notes) over the whole track,
        ``(num_frames, NUM_KEYS)`` bool, column ``k`` = MIDI pitch ``PITCH_MIN + k`` (21..108),
        frames as the activity labels (``num_frames = num_samples // hop + 1``, frame ``t``
        centred on sample ``t * hop``; a note marks every frame whose cell it overlaps). All
        False where the target is silent (known: no note). ``None`` where pitch is unknown: no
        pitch labels for the track (real corpora), an unpitched target (drums), a target the
        corpus does not separate, or an instrument under it without labels
        (:meth:`pitch_target_known`).

        ``start`` / ``frames``: only the frames ``start .. start + frames - 1`` (the loader's
        chunks), ``(frames, NUM_KEYS)``; frames past the track's end are silent (False)."""
        from iass.pipelines.corpus_format import NUM_KEYS, notes_to_roll

        if not self.pitch_target_known(track_id, target):
            return None
        row = self.track(track_id)
        n = int(row["num_frames"])
        stop = n if frames is None else int(start) + int(frames)
        notes = self._notes_of(track_id)
        parts = [notes[i] for i in self.target_instruments(track_id, target) if i in notes]
        if parts:
            on, off, pitch = (np.concatenate(c) for c in zip(*parts))
        else:
            on, off, pitch = np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
        # only the notes that reach the window (a frame's cell extends half a hop either side)
        sr, hop = int(row["sample_rate"]), self.hop
        near = (off * sr > (start - 1) * hop) & (on * sr < (stop + 1) * hop)
        roll = notes_to_roll(on[near], off[near], pitch[near], min(stop, n), hop, sr)
        if stop > n:
            roll = np.concatenate([roll, np.zeros((stop - n, NUM_KEYS), dtype=bool)])
        return roll[int(start):stop]
