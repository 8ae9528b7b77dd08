"""The one interface every source corpus adapter implements: discover -> read -> validate.

An adapter module (``medleydb``, ``mixing_secrets``, ``musdb``, ``synth``) exposes a subclass of
:class:`SourceAdapter` registered under its source name. Adapters describe tracks (metadata,
file paths, source labels); they never harmonize or label: that is the corpus build's job.

Errors about one track raise :class:`TrackError` naming the file and the problem; the build
quarantines that track (``rejects.parquet``) and goes on.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from iass.errors import IassError, SourceError


class TrackError(IassError):
    """A problem with one track: ``path`` is the offending file, ``reason`` one line for humans."""

    def __init__(self, path: str | Path, reason: str, native_id: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.native_id = native_id
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class TrackRef:
    """What discovery finds: enough to read the track later (cheap; no file is parsed)."""

    source: str
    native_id: str          # the corpus' own id: MedleyDB 'MusicDelta_Rock', MUSDB 'Artist - Title'
    root: Path              # the source root passed by the user; nothing outside it is ever read
    location: Path          # the track's metadata file, folder or .stem.mp4
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class SourceStem:
    stem_id: str                    # 'S01', 'drums', 'electric_guitar' ...
    path: Path                      # the audio file (absolute, checked to lie inside the root)
    labels: tuple[str, ...]         # the corpus' own instrument labels, primary first
    annotated: bool = True          # False: the corpus does not say which instruments are inside
                                    # (MUSDB 'other') -> activity of what it may hold is unknown
    stream: int | None = None       # stream index inside a multi-stream file (MUSDB .stem.mp4)
    # extra['instrument']: the canonical instrument (taxonomy.stem_instrument of `labels`), set by
    # the real adapters; MedleyDB-format adapters add 'component' and 'raw_labels'; a synthesized
    # stem has 'render': how its parts were rendered (sources/render_info.py)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class PitchSource:
    """A file of pitch labels of a track (read by :mod:`iass.pipelines.notes`)."""

    path: Path                      # the file (absolute)
    kind: str                       # 'notes' (note events) | 'f0' (MedleyDB time,f0 rows)
    stem_id: str | None = None      # the stem it annotates; None: the whole track (a stem column)


@dataclass(frozen=True)
class SourceTrack:
    source: str
    native_id: str
    root: Path
    artist: str
    title: str
    stems: tuple[SourceStem, ...]
    mixture_path: Path | None       # None: the mixture is the sum of the stems (recorded as such)
    mixture_stream: int | None = None
    split: str | None = None        # a split the corpus declares ('train'|'valid'|'test'), else None
    activation_conf_path: Path | None = None   # MedleyDB-format _ACTIVATION_CONF.lab, if shipped
    note_labels_path: Path | None = None       # exact activity intervals (synth), if shipped
    pitch_sources: tuple[PitchSource, ...] = ()  # note events / f0 annotations, if shipped
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)  # genre, origin, ...
    warnings: tuple[str, ...] = ()  # non-fatal findings while reading (recorded, not hidden)
    side_files: tuple[Path, ...] = ()  # other files read for the track (in its cache key)


@dataclass
class TrackAudio:
    """Decoded, validated audio of one track: float32 (frames, 2) at ``sample_rate``."""

    sample_rate: int
    stems: dict[str, np.ndarray]    # stem_id -> audio
    mixture: np.ndarray | None      # None when the corpus has no usable mixture
    warnings: list[str] = field(default_factory=list)  # padded tails, resampled, mono->stereo ...


class SourceAdapter(abc.ABC):
    """discover -> read -> validate (metadata) and load (audio), for one source corpus."""

    name: ClassVar[str]
    #: label map file in datasets/sources/ (source label -> canonical instrument)
    label_map: ClassVar[str]

    def __init__(self, **options: Any):
        from iass.pipelines.taxonomy import load_label_map

        #: the ``layout:`` options of the label map, overridden by keyword arguments
        self.options = adapter_options(self.name, options)
        self.labels = load_label_map(self.name)

    @abc.abstractmethod
    def discover(self, root: Path) -> Iterator[TrackRef]:
        """Every track under ``root``, in a deterministic (sorted) order. Never raises per track."""

    @abc.abstractmethod
    def read(self, ref: TrackRef) -> SourceTrack:
        """Parse a track's metadata (no audio decoding). Raises TrackError."""

    def validate(self, track: SourceTrack) -> list[str]:
        """Problems found without a full decode (missing files, headers, rates, lengths).

        Empty list = valid. The default checks every referenced file exists inside the root and
        its header is readable; adapters extend it.
        """
        from iass.pipelines.audio import DEFAULT_MAX_PAD_SECONDS, validate_track_files

        options = getattr(self, "options", None) or {}
        return validate_track_files(track, float(options.get("max_pad_seconds", DEFAULT_MAX_PAD_SECONDS)))

    def load(self, track: SourceTrack, sample_rate: int = 44100) -> TrackAudio:
        """Decode and validate every stem (and the mixture). Raises TrackError."""
        from iass.pipelines.audio import DEFAULT_MAX_PAD_SECONDS, load_track_audio

        options = getattr(self, "options", None) or {}
        return load_track_audio(
            track, sample_rate, float(options.get("max_pad_seconds", DEFAULT_MAX_PAD_SECONDS))
        )


def adapter_options(source: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """An adapter's options: the ``layout:`` section of its label map, then ``overrides``.

    Unknown override keys are an error (a typo must not be silently ignored).
    """
    from iass.pipelines.taxonomy import load_label_map

    label_map = load_label_map(source)
    options = dict(label_map.layout)
    for key, value in (overrides or {}).items():
        if key not in options:
            raise SourceError(
                f"unknown option {key!r} for source {source!r}; known: {', '.join(sorted(options))} "
                f"(the 'layout:' section of {label_map.path})"
            )
        options[key] = value
    return options


_REGISTRY = {
    "medleydb": "iass.pipelines.sources.medleydb:MedleyDBAdapter",
    "mixing_secrets": "iass.pipelines.sources.mixing_secrets:MixingSecretsAdapter",
    "musdb": "iass.pipelines.sources.musdb:MUSDBAdapter",
    "synth": "iass.pipelines.sources.synth:SynthAdapter",
}


def source_names() -> list[str]:
    return list(_REGISTRY)


def get_adapter(name: str, **options: Any) -> SourceAdapter:
    """The adapter registered under ``name``; ``options`` override its yaml ``layout:``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise SourceError(f"unknown source {name!r}; registered: {', '.join(_REGISTRY)}") from None
    module, _, cls = target.partition(":")
    adapter_cls = getattr(importlib.import_module(module), cls)
    return adapter_cls(**options) if options else adapter_cls()
