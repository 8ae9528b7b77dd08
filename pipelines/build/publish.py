"""Publishing a build: the tables (tracks, stems, rejects, taxonomy, activity shards) go into a
snapshot folder of the version, then manifest.json (naming the snapshot) is replaced in one
rename: the commit point. A reader keys off the manifest it opened, so it sees the old version or
the new one, never a mix. Then the root mirror and the prune of what no version needs."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from iass import __version__
from iass.io import (
    atomic_link,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    stable_hash,
)
from iass.pipelines import corpus_format as cf
from iass.pipelines.build.cache import CachePaths
from iass.pipelines.build.config import (
    BUILD_VERSION,
    LABEL_VERSION,
    SHARD_DIGEST_KEY,
    SNAPSHOT_DIR,
    BuildConfig,
)
from iass.pipelines.corpus_check import corpus_version
from iass.pipelines.splits import SPLITS


def _table(rows: list[dict], schema):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema)


def publish_corpus(cfg: BuildConfig, records: list[dict], rejects: list[dict], split) -> dict:
    """Tables, version and manifest of ``records`` (sorted by track id) and ``rejects`` with the
    split guard's ``split``; written and committed unless the published manifest is this one.
    Returns {manifest, shards, unchanged, tracks_rows, by_split}."""
    from iass.pipelines.taxonomy import label_map_hash, load_taxonomy

    out = Path(cfg.out)
    layout = cf.CorpusLayout(out)
    tracks_rows, stems_rows = [], []
    for r in records:
        row = dict(r["track"])
        row["split"] = split.split[r["track_id"]]
        row["song_key"] = split.song_key[r["track_id"]]
        row["hop"] = cfg.hop
        tracks_rows.append({k: row.get(k) for k in cf.TRACKS_SCHEMA.names})
        stems_rows.extend(r["stems"])
    stems_rows.sort(key=lambda s: (s["track_id"], s["instrument"]))
    params = cfg.public_params()
    pitched = [r for r in records if r.get("pitch")]  # tracks with pitch labels
    pitch_rows = sorted((p for r in pitched for p in r["pitch"]),
                        key=lambda p: (p["track_id"], p["instrument"]))
    version = corpus_version(tracks_rows, stems_rows,
                             [(r["track_id"], r["activity_digest"]) for r in records],
                             rejects, params, [(r["track_id"], r["notes_digest"]) for r in pitched])
    taxonomy = load_taxonomy()
    sources_used = sorted({name for name, _ in cfg.sources})
    by_split = {s: sum(1 for t in tracks_rows if t["split"] == s) for s in SPLITS}
    by_source = {s: sum(1 for t in tracks_rows if t["source"] == s) for s in sources_used}
    manifest = {
        "format_version": cf.FORMAT_VERSION,
        "corpus_version": version,
        "code_version": {"iass": __version__, "build": BUILD_VERSION, "labels": LABEL_VERSION},
        "params": params,
        "taxonomy": {"version": taxonomy.version, "sha256": taxonomy.sha256},
        "label_maps": {s: label_map_hash(s) for s in sources_used},
        "sources": sources_used,
        "counts": {
            "tracks": len(tracks_rows), "rejects": len(rejects), "stems": len(stems_rows),
            "activity_rows": int(sum(r["activity_rows"] for r in records)),
            "hours": round(sum(t["duration_s"] for t in tracks_rows) / 3600.0, 6),
            "by_split": by_split, "by_source": by_source,
        },
        "duplicates": split.duplicates,
    }
    if pitched:  # (absent without pitch labels: the manifest of every earlier build)
        manifest["counts"].update(pitch_tracks=len(pitched), pitch_instruments=len(pitch_rows),
                                  notes=int(sum(p["num_notes"] for p in pitch_rows)))
    snap_rel = f"{SNAPSHOT_DIR}/{version[:16]}"
    manifest["snapshot"] = snap_rel
    snap = cf.CorpusLayout(out / snap_rel)
    shard_names = {r["shard"] for r in records}
    pitch_shards = {r["shard"] for r in pitched} if pitched else None
    prior = None
    with contextlib.suppress(OSError, ValueError):
        prior = json.loads(layout.manifest.read_text())
    prior_layout = _snapshot_layout(out, prior)
    unchanged = (prior == manifest
                 and all(p.exists() for p in _table_files(snap, shard_names, pitch_shards)))
    shards = {"written": 0, "kept": 0, "removed": 0}
    if not unchanged:
        shards = write_activity_shards(out, records, cfg.num_shards, dest=snap.root,
                                       reuse=prior_layout.root if prior_layout else None)
        write_notes_shards(out, pitched, dest=snap.root,
                           reuse=prior_layout.root if prior_layout else None)
        if pitched:
            atomic_write_parquet(snap.pitch, _table(pitch_rows, cf.PITCH_SCHEMA))
        elif snap.pitch.exists():
            snap.pitch.unlink()
        atomic_write_parquet(snap.tracks, _table(tracks_rows, cf.TRACKS_SCHEMA))
        atomic_write_parquet(snap.stems, _table(stems_rows, cf.STEMS_SCHEMA))
        atomic_write_parquet(snap.rejects, _table(rejects, cf.REJECTS_SCHEMA))
        atomic_write_bytes(snap.taxonomy, Path(taxonomy.path).read_bytes())
        atomic_write_json(snap.manifest, manifest)
        atomic_write_json(layout.manifest, manifest)  # the commit: a manifest means a whole corpus
    mirror_snapshot(out, snap, shard_names, pitch_shards)
    keep_dirs = {(r["shard"], Path(r["track"]["mixture_path"]).parent.name) for r in records}
    keep_snaps = {snap_rel}
    if prior and prior.get("snapshot") and prior != manifest:
        keep_dirs |= _snapshot_tracks(prior_layout)
        keep_snaps.add(prior["snapshot"])
    _prune(out, {r["track_id"] for r in records}, keep_dirs, keep_snaps)
    return {"manifest": manifest, "shards": shards, "unchanged": unchanged,
            "tracks": len(tracks_rows), "by_split": by_split}


def write_activity_shards(out: Path, records: list[dict], num_shards: int,
                          dest: Path | None = None, reuse: Path | None = None) -> dict[str, int]:
    """Assemble activity/part-<shard>.parquet under ``dest`` (a snapshot; default ``out``) from the
    per-track files; a shard whose members are unchanged is kept (``dest`` == ``reuse``) or hard
    linked from the previous snapshot ``reuse``, never rewritten."""
    return _write_shards(out, records, dest, reuse, "activity_digest", cf.CorpusLayout.activity_part,
                         cf.CorpusLayout.activity_dir.fget, CachePaths.activity_file, cf.ACTIVITY_SCHEMA)


def write_notes_shards(out: Path, records: list[dict], dest: Path | None = None,
                       reuse: Path | None = None) -> dict[str, int]:
    """notes/part-<shard>.parquet of the ``records`` with pitch labels, as the activity shards."""
    return _write_shards(out, records, dest, reuse, "notes_digest", cf.CorpusLayout.notes_part,
                         cf.CorpusLayout.notes_dir.fget, CachePaths.notes_file, cf.NOTES_SCHEMA)


def _write_shards(out: Path, records: list[dict], dest, reuse, digest_key: str, part_of, dir_of,
                  cache_file_of, schema) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout = cf.CorpusLayout(out if dest is None else dest)
    previous = cf.CorpusLayout(reuse) if reuse is not None else layout
    cache = CachePaths(out)
    by_shard: dict[str, list[dict]] = {}
    for r in records:
        by_shard.setdefault(r["shard"], []).append(r)
    stats = {"written": 0, "kept": 0, "removed": 0}
    for shard, recs in sorted(by_shard.items()):
        recs = sorted(recs, key=lambda r: r["track_id"])
        digest = stable_hash([(r["track_id"], r[digest_key]) for r in recs]).encode()
        path = part_of(layout, shard)
        kept = False
        for old in dict.fromkeys((path, part_of(previous, shard))):
            try:
                if old.exists() and (pq.read_schema(old).metadata or {}).get(SHARD_DIGEST_KEY) == digest:
                    if old != path:
                        atomic_link(old, path)
                    kept = True
                    break
            except (OSError, pa.ArrowInvalid):
                pass
        if kept:
            stats["kept"] += 1
            continue
        tables = [pq.read_table(cache_file_of(cache, r["track_id"])) for r in recs]
        table = pa.concat_tables(tables).cast(schema)
        table = table.replace_schema_metadata({SHARD_DIGEST_KEY: digest})
        with atomic_path(path) as tmp:
            pq.write_table(table, str(tmp), compression="zstd")
        stats["written"] += 1
    folder = dir_of(layout)
    for p in folder.glob("part-*.parquet") if folder.exists() else []:
        if p.stem.removeprefix("part-") not in by_shard:
            p.unlink()
            stats["removed"] += 1
    return stats


def _snapshot_layout(out: Path, manifest: dict | None) -> cf.CorpusLayout | None:
    """Where the tables of a published manifest live (the root itself for older corpora)."""
    if not manifest:
        return None
    snap = manifest.get("snapshot")
    return cf.CorpusLayout(out / snap) if snap else cf.CorpusLayout(out)


def _table_files(layout: cf.CorpusLayout, shards: Iterable[str],
                 pitch_shards: Iterable[str] | None = None) -> list[Path]:
    """The tables of a version; ``pitch_shards``: the notes shards (None: no pitch labels)."""
    files = [layout.tracks, layout.stems, layout.rejects, layout.taxonomy,
             *(layout.activity_part(s) for s in sorted(set(shards)))]
    if pitch_shards is not None:
        files += [layout.pitch, *(layout.notes_part(s) for s in sorted(set(pitch_shards)))]
    return files


def mirror_snapshot(out: Path, snap: cf.CorpusLayout, shards: Iterable[str],
                    pitch_shards: Iterable[str] | None = None) -> None:
    """Make the root tables (tracks.parquet, activity/part-*, ...) hard links to the published
    snapshot, for tools that read the root directly; readers of :class:`Corpus` use the snapshot
    named in manifest.json, so they never see this step half done."""
    root = cf.CorpusLayout(out)
    shards = set(shards)
    for src in _table_files(snap, shards, pitch_shards):
        dst = root.root / src.relative_to(snap.root)
        try:
            if os.path.samefile(src, dst):
                continue
        except OSError:
            pass
        atomic_link(src, dst)
    if root.activity_dir.exists():
        for p in root.activity_dir.glob("part-*.parquet"):
            if p.stem.removeprefix("part-") not in shards:
                p.unlink()
    keep_notes = set(pitch_shards or ())
    if root.notes_dir.exists():
        for p in root.notes_dir.glob("part-*.parquet"):
            if p.stem.removeprefix("part-") not in keep_notes:
                p.unlink()
    if pitch_shards is None and root.pitch.exists():
        root.pitch.unlink()


def _snapshot_tracks(layout: cf.CorpusLayout | None) -> set[tuple[str, str]]:
    """(shard, audio folder) of every track of a published version (its audio must stay readable)."""
    import pyarrow.parquet as pq

    if layout is None:
        return set()
    try:
        t = pq.read_table(layout.tracks, columns=["shard", "mixture_path"])
    except Exception:  # noqa: BLE001 - a legacy or damaged prior: nothing to protect
        return set()
    return {(shard, Path(mix).parent.name)
            for shard, mix in zip(t.column("shard").to_pylist(), t.column("mixture_path").to_pylist())}


def _prune(out: Path, keep_ids: set[str], keep_dirs: set[tuple[str, str]],
           keep_snapshots: set[str]) -> None:
    """Remove audio of tracks in neither the new nor the previous version, caches of tracks that
    are gone, and snapshots other than ``keep_snapshots``. The previous version's audio and tables
    stay one build longer, so a reader that opened it during this build reads it to the end."""
    layout = cf.CorpusLayout(out)
    if layout.audio_dir.exists():
        for shard_dir in layout.audio_dir.iterdir():
            if not shard_dir.is_dir():
                continue
            for tdir in shard_dir.iterdir():
                if (shard_dir.name, tdir.name) not in keep_dirs:
                    shutil.rmtree(tdir, ignore_errors=True)
            if not any(shard_dir.iterdir()):
                shard_dir.rmdir()
    cache = CachePaths(out)
    for folder, suffix in ((cache.tracks, ".json"), (cache.activity, ".parquet"),
                           (cache.notes, ".parquet")):
        if folder.exists():
            for p in folder.glob(f"*{suffix}"):
                if p.name[: -len(suffix)] not in keep_ids:
                    p.unlink()
    snaps = out / SNAPSHOT_DIR
    if snaps.exists():
        for d in snaps.iterdir():
            if f"{SNAPSHOT_DIR}/{d.name}" not in keep_snapshots:
                shutil.rmtree(d, ignore_errors=True)
