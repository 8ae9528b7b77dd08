"""The corpus build: a Prefect 3 flow, ``build_corpus``, that reads like the data flow.

    discover (per source) -> per track: read + validate -> harmonize -> label -> write
    -> split guard -> tables (tracks, stems, activity shards, rejects) -> manifest

Format: :mod:`iass.pipelines.corpus_format` (the one module writer and readers share).

Caching (our own keys; Prefect's result cache is off so nothing is stored twice):

* ``input_digest`` (also a column of tracks.parquet) = hash of (source, native id, the content
  hash of every source file of the track, sample rate, taxonomy sha256, the source's label-map
  sha256, BUILD_VERSION; and the source's adapter options when it has some, a path option by
  its presence: the files read through it are hashed by content). File content hashes are FULL xxh3-128 hashes of the bytes; a per-track
  stat cache (relative path, size, mtime_ns -> hash) lets an unchanged file skip re-hashing, so
  the digest is content-based (same on any machine) while a no-change rebuild only stats files.
* ``label_key`` = hash of (input_digest, label method, label params, hop, LABEL_VERSION; and
  PITCH_VERSION for a track with pitch sources). The files of those sources (note events, f0
  annotations) are source files of the track, in its input_digest.
* Per track, ``<out>/.cache/tracks/<track_id>.json`` records both keys, the table rows and the
  output sizes; ``<out>/.cache/activity/<track_id>.parquet`` its activity rows (and
  ``.cache/notes/<track_id>.parquet`` its note events when it has pitch labels). Same input_digest
  and outputs present: no audio work. Same input_digest, other label_key: the labels are
  recomputed from the corpus' own WAVs (no source decode, no audio rewrite). An activity shard is
  rewritten only when the digest of its members changes (stored in the Parquet metadata).
* Records are written last, after the audio and activity they describe (all atomic), so a build
  killed at any point resumes where it stopped and ends with the same corpus version.

Corpus version = sha256 over the canonical JSON of the table rows (audio sha256s included), the
activity content digests, the rejects, the format version and the params; no time, no absolute
path. WAV bytes are deterministic (written by :func:`iass.io.write_wav`, without libsndfile's
timestamped PEAK chunk).

Modules: :mod:`.config` (BuildConfig, config_from_params, BuildError), :mod:`.lock` (build_lock),
:mod:`.cache` (keys, records, the one freshness test), :mod:`.steps` (the per-track steps and
labelling), :mod:`.publish` (snapshots, activity shards, prune, manifest), :mod:`.plan` (discovery, cache
settlement, split guard and the tail of a build as plain functions: a build the cache settles
entirely runs without Prefect), :mod:`.flow` (the Prefect flow and tasks, over the same
functions), :mod:`.run` (prefect_environment, run_build).

Importing this package imports neither Prefect nor changes the environment: the names of
:mod:`.flow` (``build_corpus``, the tasks) load on first use, and :func:`run_build` applies
:func:`prefect_environment` before it imports them.
"""
from __future__ import annotations

from iass.pipelines.build.cache import (
    CachePaths,
    audio_dir_name,
    cached_record,
    input_digest,
    is_fresh,
    label_key,
    load_record,
    track_source_files,
)
from iass.pipelines.build.config import (
    BUILD_VERSION,
    CACHE_DIR,
    DISK_ERRNOS,
    LABEL_VERSION,
    LOCK_NAME,
    SHARD_DIGEST_KEY,
    SNAPSHOT_DIR,
    BuildConfig,
    BuildError,
    config_from_params,
    disk_error_message,
    is_disk_error,
)
from iass.pipelines.build.lock import build_lock
from iass.pipelines.build.publish import mirror_snapshot, publish_corpus, write_activity_shards
from iass.pipelines.build.run import prefect_defaults, prefect_environment, preflight, run_build
from iass.pipelines.build.steps import activity_table, label_track, run_track

#: names of .flow, imported on first access (they import Prefect)
_FLOW_NAMES = {"build_corpus", "process_track", "discover_source",
               "split_guard", "publish_task", "task_runner"}

__all__ = [
    "BUILD_VERSION", "CACHE_DIR", "DISK_ERRNOS", "LABEL_VERSION", "LOCK_NAME", "SHARD_DIGEST_KEY",
    "SNAPSHOT_DIR", "BuildConfig", "BuildError", "CachePaths", "activity_table", "audio_dir_name",
    "build_lock", "cached_record", "config_from_params", "disk_error_message", "input_digest",
    "is_disk_error", "is_fresh", "label_key", "label_track", "load_record", "mirror_snapshot",
    "prefect_defaults", "prefect_environment", "preflight", "publish_corpus", "run_build",
    "run_track", "track_source_files", "write_activity_shards", *sorted(_FLOW_NAMES),
]


def __getattr__(name: str):
    if name in _FLOW_NAMES:
        prefect_environment()  # Prefect reads its settings when it is imported
        from iass.pipelines.build import flow

        return getattr(flow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
