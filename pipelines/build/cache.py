"""The per-track content cache (see the package doc): keys, records, and ONE freshness test
(:func:`is_fresh`) used both by the flow's fast path (:func:`cached_record`, no task) and by the
read step of a track that needs its source files re-hashed."""
from __future__ import annotations

import json
import os
from pathlib import Path

from iass.io import atomic_write_json, file_digest, stable_hash
from iass.pipelines import corpus_format as cf
from iass.pipelines.build.config import BUILD_VERSION, CACHE_DIR, LABEL_VERSION, BuildConfig

#: bump when pitch labels (pipelines/notes.py) change their output (relabels tracks with pitch)
PITCH_VERSION = "1"
from iass.pipelines.sources.base import SourceTrack, TrackRef
from iass.pipelines.sources.resolve import is_path_option


class CachePaths:
    def __init__(self, out: Path):
        self.root = Path(out) / CACHE_DIR
        self.tracks = self.root / "tracks"
        self.activity = self.root / "activity"
        self.notes = self.root / "notes"

    def record(self, track_id: str) -> Path:
        return self.tracks / f"{track_id}.json"

    def activity_file(self, track_id: str) -> Path:
        return self.activity / f"{track_id}.parquet"

    def notes_file(self, track_id: str) -> Path:
        return self.notes / f"{track_id}.parquet"


def load_record(out: Path, track_id: str) -> dict | None:
    p = CachePaths(out).record(track_id)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def write_record(out: Path, track_id: str, rec: dict) -> None:
    atomic_write_json(CachePaths(out).record(track_id), rec)


def track_source_files(ref: TrackRef, track: SourceTrack, use_lab: bool) -> list[Path]:
    files = ({Path(s.path) for s in track.stems} | {Path(p.path) for p in track.pitch_sources}
             | {Path(p) for p in track.side_files})
    for p in (track.mixture_path, track.note_labels_path,
              track.activation_conf_path if use_lab else None):
        if p is not None:
            files.add(Path(p))
    if Path(ref.location).is_file():
        files.add(Path(ref.location))
    return sorted(files)


def _rel(root: Path, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _inside(root: Path, path: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def hash_source_files(ref: TrackRef, track: SourceTrack, cfg: BuildConfig,
                      prev: dict | None) -> tuple[dict[str, list], dict[str, str]]:
    """({relative path: [size, mtime_ns, xxh3-128]}, {relative path: absolute path} of the files
    outside the source root, e.g. a metadata_dir). An unchanged file (same size and mtime as in
    ``prev``) is not re-hashed."""
    prev_files = (prev or {}).get("files", {})
    files: dict[str, list] = {}
    outside: dict[str, str] = {}
    for p in track_source_files(ref, track, cfg.use_medleydb_lab):
        st = p.stat()
        rel = _rel(ref.root, p)
        if not _inside(ref.root, p):
            outside[rel] = str(Path(p).absolute())
        old = prev_files.get(rel)
        digest = old[2] if old and old[0] == st.st_size and old[1] == st.st_mtime_ns else \
            file_digest(p, "xxh3_128")
        files[rel] = [st.st_size, st.st_mtime_ns, digest]
    return files, outside


def input_digest(ref: TrackRef, file_hashes: dict[str, str], cfg: BuildConfig) -> str:
    """The audio cache key: source file contents + everything that shapes the written audio.

    Adapter options enter only when a source has some (no options: the key of every earlier
    build); a path option by its presence, the files read through it by their content above."""
    from iass.pipelines.taxonomy import label_map_hash, load_taxonomy

    key = {
        "source": ref.source, "native_id": ref.native_id, "files": dict(sorted(file_hashes.items())),
        "sample_rate": cfg.sample_rate, "taxonomy": load_taxonomy().sha256,
        "label_map": label_map_hash(ref.source), "build": BUILD_VERSION,
        "mixture_tolerance_db": cfg.mixture_tolerance_db,
    }
    options = cfg.options_of(ref.source)
    if options:
        key["options"] = {k: (True if is_path_option(k) and v is not None else v)
                          for k, v in sorted(options.items())}
    return stable_hash(key)


def label_key(digest: str, method_hint: str, cfg: BuildConfig, pitch: bool = False) -> str:
    """The labels' cache key; ``pitch``: the track has pitch sources (their labels are keyed by
    PITCH_VERSION too; a track without keeps the key of every earlier build)."""
    # exact note labels depend on the hop only, not on the activation-confidence params
    key = {"input": digest, "method": method_hint,
           "params": None if method_hint == "notes" else cfg.label_params,
           "hop": cfg.hop, "labels": LABEL_VERSION}
    if pitch:
        key["pitch"] = PITCH_VERSION
    return stable_hash(key)


def dir_mtime(ref: TrackRef) -> int:
    loc = Path(ref.location)
    try:
        return (loc if loc.is_dir() else loc.parent).stat().st_mtime_ns
    except OSError:
        return -1


def outputs_ok(out: Path, outputs: dict[str, int]) -> bool:
    if not outputs:
        return False
    for rel, size in outputs.items():
        try:
            if (out / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def audio_dir_name(track_id: str, digest: str) -> str:
    """The folder of a track's WAVs: the track id plus a key of its source content, so audio that
    changes goes to a new folder and a reader of the previous version keeps reading the old one
    (deterministic: the same inputs give the same folder on any machine)."""
    return f"{track_id}.{digest[:8]}"


def is_fresh(prev: dict | None, out: Path, track_id: str, shard: str, digest: str,
             cfg: BuildConfig, source: str, label: str | None = None) -> bool:
    """THE cache test. The record ``prev`` vouches for audio of the inputs keyed ``digest`` in
    ``shard``, written with the same adapter options, whose files are all there with the recorded
    sizes; with ``label`` (a label key) also for labels of that key whose activity file exists.
    ``label=None`` asks about the audio only (stale labels are then recomputed from it)."""
    if (not prev or prev.get("input_digest") != digest or prev.get("shard") != shard
            or prev.get("options", {}) != cfg.options_of(source)
            or not outputs_ok(out, prev.get("outputs", {}))):
        return False
    return label is None or (prev.get("label_key") == label
                             and CachePaths(out).activity_file(track_id).exists()
                             and (not prev.get("pitch") or CachePaths(out).notes_file(track_id).exists()))


def cached_record(ref: TrackRef, cfg: BuildConfig) -> dict | None:
    """The fast no-change path, run in the flow itself (no task, no metadata parsing).

    Valid when every source file the record lists has the same size and mtime, the track
    folder's mtime is unchanged (no file added or removed beside them), and :func:`is_fresh`
    holds for the digests computed from the recorded content hashes and the current params."""
    out = Path(cfg.out)
    track_id = cf.make_track_id(ref.source, ref.native_id)
    prev = load_record(out, track_id)
    # a record without pitch_hint predates pitch labels: whether the track has pitch sources
    # (e.g. f0 files under annotations_dir) is only known by reading it
    if not prev or "method_hint" not in prev or "pitch_hint" not in prev:
        return None
    root = Path(ref.root)
    outside = prev.get("outside") or {}
    try:
        for rel, (size, mtime, _) in prev["files"].items():
            st = Path(outside.get(rel) or root / rel).stat()
            if st.st_size != size or st.st_mtime_ns != mtime:
                return None
        digest = input_digest(ref, {k: v[2] for k, v in prev["files"].items()}, cfg)
    except (OSError, ValueError):
        return None
    if prev.get("dir_mtime_ns") != dir_mtime(ref) or not is_fresh(
            prev, out, track_id, cf.shard_of(track_id, cfg.num_shards), digest, cfg, ref.source,
            label_key(digest, prev["method_hint"], cfg, bool(prev["pitch_hint"]))):
        return None
    prev.update(status="cached", pid=os.getpid())
    return prev
