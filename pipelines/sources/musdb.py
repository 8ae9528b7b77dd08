"""MUSDB18 and MUSDB18-HQ (Rafii et al. 2017): 150 songs, four stems each.

Dataset card
------------
- 100 train + 50 test songs, 44.1 kHz stereo; stems vocals, drums, bass, other (+ mixture).
- Two formats, detected per track from the files (HQ preferred when both are present)::

      HQ:     <root>/{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav
      stems:  <root>/{train,test}/<Artist - Title>.stem.mp4
              (streams 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals; AAC)

  A root without train/ and test/ folders is read flat (split from the validation list only).
  The .stem.mp4 streams are decoded by the ffmpeg binary of imageio-ffmpeg (no system ffmpeg).
- Official split: test/ -> 'test'; the 14 validation tracks of sigsep's mus.yaml -> 'valid';
  the rest of train/ -> 'train'.
- ``other`` is not annotated: what it holds (guitars, keys, ...) is unknown, so activity labels
  of those instruments are unknown for MUSDB tracks, never inactive.
- Pitch: MUSDB has none (unknown). A sidecar of note events, ``notes.csv`` in an HQ track folder
  or ``<Artist - Title>.notes.csv`` beside a .stem.mp4 (``stem,onset,offset,pitch,velocity``; the
  synthesizer's MUSDB layouts write it), is read as the track's pitch labels.
- Overlap: the 100 DSD100 songs come from the Mixing Secrets library and 46 from MedleyDB; the
  corpus build deduplicates across sources.
- Licence: research use (sigsep); nothing is downloaded here.

Label map, stream ids, validation list: ``datasets/sources/musdb.yaml``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator

from iass.errors import SourceError
from iass.pipelines.audio import safe_join
from iass.pipelines.sources.base import (
    PitchSource,
    SourceAdapter,
    SourceStem,
    SourceTrack,
    TrackError,
    TrackRef,
)
from iass.pipelines.sources.render_info import musdb_sidecar, parse_records
from iass.pipelines.taxonomy import TaxonomyError

SPLIT_FOLDERS = ("train", "test")
STEM_SUFFIX = ".stem.mp4"
#: the pitch sidecar (not part of MUSDB; the synthesizer writes it): HQ <track>/notes.csv,
#: stems <Artist - Title>.notes.csv beside the .stem.mp4; columns stem,onset,offset,pitch,velocity
NOTES_FILE = "notes.csv"
NOTES_SUFFIX = ".notes.csv"


class MUSDBAdapter(SourceAdapter):
    name: ClassVar[str] = "musdb"
    label_map: ClassVar[str] = "musdb.yaml"

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options.get("format", "auto") not in ("auto", "hq", "stems"):
            raise SourceError(f"musdb option format must be auto|hq|stems, got {self.options['format']!r}")
        self.validation_tracks = frozenset(self.labels.doc.get("validation_tracks") or ())
        self.stem_specs: dict[str, dict] = dict(self.options["stems"])
        self.mixture_spec: dict = dict(self.options["mixture"])

    # ------------------------------------------------------------------ discover

    def _split(self, folder: str | None, native_id: str) -> str | None:
        if folder == "test":
            return "test"
        if native_id in self.validation_tracks:
            return "valid"
        return "train" if folder == "train" else None

    def discover(self, root: Path) -> Iterator[TrackRef]:
        root = Path(root)
        if not root.is_dir():
            return
        folders = [(root / f, f) for f in SPLIT_FOLDERS if (root / f).is_dir()] or [(root, None)]
        fmt = self.options.get("format", "auto")
        mixture_file = self.mixture_spec["file"]
        found: dict[tuple[str, str], TrackRef] = {}
        for folder, split_name in folders:
            for entry in sorted(folder.iterdir()):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir() and fmt in ("auto", "hq") and (
                    (entry / mixture_file).exists()
                    or any((entry / spec["file"]).exists() for spec in self.stem_specs.values())
                ):
                    native_id, kind = entry.name, "hq"
                elif entry.is_file() and entry.name.endswith(STEM_SUFFIX) and fmt in ("auto", "stems"):
                    native_id, kind = entry.name[: -len(STEM_SUFFIX)], "stems"
                else:
                    continue
                # HQ WAV wins over lossy stems of the same track in the same folder; the same
                # song in two split folders is yielded twice: the build quarantines both copies
                # (which split is right is unknowable), never drops one silently
                previous = found.get((native_id, str(folder)))
                if previous is not None and previous.extra["format"] == "hq":
                    continue
                found[(native_id, str(folder))] = TrackRef(
                    source=self.name,
                    native_id=native_id,
                    root=root,
                    location=entry,
                    extra={"format": kind, "split": self._split(split_name, native_id)},
                )
        yield from (found[k] for k in sorted(found))

    # ------------------------------------------------------------------ read

    def read(self, ref: TrackRef) -> SourceTrack:
        native_id = ref.native_id
        root = Path(ref.root)
        location = Path(ref.location)
        kind = ref.extra.get("format") or ("stems" if location.name.endswith(STEM_SUFFIX) else "hq")
        artist, sep, title = native_id.partition(" - ")
        if not sep:
            artist, title = "", native_id
        render, side_files, warnings = self._render_records(root, location, native_id)
        stems = []
        for stem_name, spec in self.stem_specs.items():
            labels = (stem_name,)
            try:
                instrument = self.labels.lookup(stem_name, track=native_id)
            except TaxonomyError as exc:
                raise TrackError(self.labels.path, str(exc), native_id) from None
            if kind == "hq":
                path, stream = safe_join(root, location, spec["file"], native_id=native_id), None
            else:
                path, stream = location, int(spec["stream"])
            stems.append(
                SourceStem(
                    stem_id=stem_name,
                    path=path,
                    labels=labels,
                    annotated=self.labels.is_annotated(labels),
                    stream=stream,
                    extra={"instrument": instrument, "render": render.get(stem_name, [])},
                )
            )
        if kind == "hq":
            mixture_path = safe_join(root, location, self.mixture_spec["file"], native_id=native_id)
            mixture_stream = None
        else:
            mixture_path, mixture_stream = location, int(self.mixture_spec["stream"])
        notes = (location / NOTES_FILE if kind == "hq"
                 else location.with_name(native_id + NOTES_SUFFIX))
        pitch_sources = ()
        if notes.is_file():  # (safe_join: a link must not lead out of the root)
            notes = safe_join(root, notes.parent, notes.name, native_id=native_id)
            pitch_sources = (PitchSource(notes, "notes"),)
        split = ref.extra.get("split")
        if split is None and "split" not in ref.extra:
            parent = location.parent.name
            split = self._split(parent if parent in SPLIT_FOLDERS else None, native_id)
        return SourceTrack(
            source=self.name,
            native_id=native_id,
            root=root,
            artist=artist.strip(),
            title=title.strip(),
            stems=tuple(stems),
            mixture_path=mixture_path,
            mixture_stream=mixture_stream,
            split=split,
            pitch_sources=pitch_sources,
            metadata={"format": kind},
            warnings=warnings,
            side_files=side_files,
        )

    @staticmethod
    def _render_records(root: Path, location: Path, native_id: str
                        ) -> tuple[dict[str, list[dict]], tuple[Path, ...], tuple[str, ...]]:
        """A synthesized track's render records per stem, from its ``iass_render.json`` sidecar
        (sources/render_info.py); ({}, (), ()) for recorded audio. An unreadable sidecar is a
        warning, not a reject: the records are provenance."""
        import json

        sidecar = musdb_sidecar(location, native_id)
        if not sidecar.is_file():
            return {}, (), ()
        sidecar = safe_join(root, sidecar.parent, sidecar.name, native_id=native_id)
        try:
            doc = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return {}, (sidecar,), (f"{sidecar.name}: unreadable ({' '.join(str(exc).split())}); "
                                    "no render records",)
        stems = doc.get("stems") if isinstance(doc, dict) else None
        if not isinstance(stems, dict):
            return {}, (sidecar,), (f"{sidecar.name}: no 'stems' mapping; no render records",)
        return {str(k): parse_records(v) for k, v in stems.items()}, (sidecar,), ()
