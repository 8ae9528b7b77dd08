"""Corpus version, summary and integrity checks (``iass corpus info|validate``); no Prefect here.

The corpus version is defined once, in :func:`corpus_version`, and recomputed by
:func:`validate_corpus` from the files alone, so any change to a table, an audio file or an
activity shard after the build is caught.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from iass.io import file_digest, stable_hash
from iass.pipelines import corpus_format as cf


def activity_digest(table) -> str:
    """Content digest of one track's activity rows (independent of the Parquet writer)."""
    h = hashlib.sha256()
    for col in ("instrument", "frame", "active", "confidence"):
        arr = table.column(col).combine_chunks() if hasattr(table.column(col), "combine_chunks") \
            else table.column(col)
        if col == "instrument":
            h.update("\0".join(arr.to_pylist()).encode())
        elif col == "active":
            vals = arr.to_pylist()
            h.update(bytes(2 if v is None else int(v) for v in vals))
        else:
            h.update(np.ascontiguousarray(arr.to_numpy(zero_copy_only=False)).tobytes())
    return h.hexdigest()


def notes_digest(pitch_rows: list[dict], notes) -> str:
    """Content digest of one track's pitch labels: its PITCH_SCHEMA rows and note events."""
    h = hashlib.sha256()
    h.update(stable_hash(sorted((r["instrument"], r["method"], int(r["num_notes"])) for r in pitch_rows)).encode())
    for col in ("instrument", "onset_s", "offset_s", "pitch", "velocity"):
        arr = notes.column(col).combine_chunks() if hasattr(notes.column(col), "combine_chunks") \
            else notes.column(col)
        if col in ("instrument", "velocity"):
            h.update("\0".join("" if v is None else str(v) for v in arr.to_pylist()).encode())
        else:
            h.update(np.ascontiguousarray(arr.to_numpy(zero_copy_only=False)).tobytes())
    return h.hexdigest()


def corpus_version(tracks: list[dict], stems: list[dict], activity: list[tuple[str, str]],
                   rejects: list[dict], params: dict,
                   notes: list[tuple[str, str]] | None = None) -> str:
    """sha256 over the table rows (audio sha256s included), activity digests, rejects, params,
    and the pitch labels' digests per track (``notes``) when there are any: a corpus without
    pitch labels keeps the version it had before they existed."""
    key = {
        "format_version": cf.FORMAT_VERSION, "params": params,
        "tracks": sorted(tracks, key=lambda r: r["track_id"]),
        "stems": sorted(stems, key=lambda r: (r["track_id"], r["instrument"])),
        "activity": sorted(activity),
        "rejects": sorted(rejects, key=lambda r: (r["source"], r["native_id"], r["stage"])),
    }
    if notes:
        key["notes"] = sorted(notes)
    return stable_hash(key)


def _read_table(path: Path, schema, schema_name: str, what: str, problems: list[str]):
    """The Parquet table at ``path`` when it reads and has ``schema`` (corpus_format's
    ``schema_name``); otherwise None, with the problem appended (``what`` names the file)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure means a corrupt table
        problems.append(f"{path}: unreadable{what} ({str(exc).splitlines()[0]})")
        return None
    if not table.schema.remove_metadata().equals(schema):
        problems.append(f"{path}: schema differs from corpus_format.{schema_name}")
        return None
    return table


def _rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def validate_corpus(root: str | Path, progress: bool = True) -> list[str]:
    """Problems found (empty = valid): manifest, schemas, audio checksums, activity, version."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    layout = cf.CorpusLayout(root)
    problems: list[str] = []
    try:
        manifest = json.loads(layout.manifest.read_text())
    except (OSError, ValueError) as exc:
        return [f"{layout.manifest}: unreadable manifest ({exc})"]
    if manifest.get("format_version") != cf.FORMAT_VERSION:
        return [f"{layout.manifest}: format_version {manifest.get('format_version')} != {cf.FORMAT_VERSION}"]
    audio_root = layout.root
    if manifest.get("snapshot"):  # the published version's tables (as the Corpus reader reads them)
        layout = cf.CorpusLayout(layout.root / manifest["snapshot"])
    tax_sha = (manifest.get("taxonomy") or {}).get("sha256")
    if not layout.taxonomy.is_file():
        problems.append(f"{layout.taxonomy}: missing (the taxonomy the corpus was built with)")
    elif tax_sha and file_digest(layout.taxonomy) != tax_sha:
        problems.append(f"{layout.taxonomy}: sha256 differs from the manifest's taxonomy.sha256")
    tables = {}
    for name, path, schema in (("tracks", layout.tracks, cf.TRACKS_SCHEMA),
                               ("stems", layout.stems, cf.STEMS_SCHEMA),
                               ("rejects", layout.rejects, cf.REJECTS_SCHEMA)):
        try:
            got = pq.read_schema(path)
        except Exception as exc:  # noqa: BLE001 - any pyarrow failure means a corrupt table
            problems.append(f"{path}: unreadable ({str(exc).splitlines()[0]})")
            continue
        if not got.remove_metadata().equals(schema):
            problems.append(f"{path}: schema differs from corpus_format.{name.upper()}_SCHEMA")
            continue
        tables[name] = _rows(path)
    if problems:
        return problems
    tracks = {t["track_id"]: t for t in tables["tracks"]}
    files = [(t["track_id"], t["mixture_path"], t["mixture_sha256"]) for t in tables["tracks"]]
    files += [(s["track_id"], s["path"], s["sha256"]) for s in tables["stems"]]
    for tid, rel, digest in tqdm(files, desc="checksums", unit="file", disable=not progress):
        path = audio_root / rel
        if tid not in tracks:
            problems.append(f"{path}: stem of unknown track {tid}")
        elif not path.is_file():
            problems.append(f"{path}: missing audio file")
        elif file_digest(path) != digest:
            problems.append(f"{path}: sha256 mismatch (corrupt or modified)")
    activity: list[tuple[str, str]] = []
    shards = {t["shard"] for t in tracks.values()}
    for shard in sorted(shards):
        path = layout.activity_part(shard)
        table = _read_table(path, cf.ACTIVITY_SCHEMA, "ACTIVITY_SCHEMA", " activity shard", problems)
        if table is None:
            continue
        ids = table.column("track_id").to_pylist()
        # rows of one track are contiguous (the writer concatenates per-track tables)
        start = 0
        while start < len(ids):
            tid = ids[start]
            stop = start
            while stop < len(ids) and ids[stop] == tid:
                stop += 1
            part = table.slice(start, stop - start)
            t = tracks.get(tid)
            if t is None or t["shard"] != shard:
                problems.append(f"{path}: activity rows of a track not in this shard ({tid})")
            else:
                frames = part.column("frame").to_numpy()
                if frames.size and (frames.min() < 0 or frames.max() >= t["num_frames"]):
                    problems.append(f"{path}: {tid}: frame index outside 0..{t['num_frames'] - 1}")
                activity.append((tid, activity_digest(part)))
            start = stop
    if problems:
        return problems
    notes, pitch_shards = _check_notes(layout, tracks, problems)
    if problems:
        return problems
    version = corpus_version(list(tracks.values()), tables["stems"], activity, tables["rejects"],
                             manifest.get("params", {}), notes)
    if version != manifest.get("corpus_version"):
        problems.append(f"{cf.CorpusLayout(audio_root).manifest}: corpus_version {manifest.get('corpus_version', '')[:12]} "
                        f"does not match the content ({version[:12]}): a table or shard was modified")
    if layout.root != audio_root:
        problems += _check_root_copies(audio_root, layout, shards, manifest.get("corpus_version", ""),
                                       pitch_shards)
    return problems


def _check_notes(layout: cf.CorpusLayout, tracks: dict, problems: list[str]):
    """The pitch labels (pitch.parquet, notes shards), if any: schemas, tracks, digests. Returns
    ([(track_id, notes digest)], shards holding notes) or ([], None) when there are none."""
    if not layout.pitch.exists():
        return [], None
    pitch = _read_table(layout.pitch, cf.PITCH_SCHEMA, "PITCH_SCHEMA", "", problems)
    if pitch is None:
        return [], None
    by_track: dict[str, list[dict]] = {}
    for r in pitch.to_pylist():
        if r["track_id"] not in tracks:
            problems.append(f"{layout.pitch}: pitch rows of an unknown track ({r['track_id']})")
        by_track.setdefault(r["track_id"], []).append(r)
    shards = sorted({tracks[t]["shard"] for t in by_track if t in tracks})
    notes = []
    for shard in shards:
        path = layout.notes_part(shard)
        table = _read_table(path, cf.NOTES_SCHEMA, "NOTES_SCHEMA", " notes shard", problems)
        if table is None:
            continue
        ids = np.asarray(table.column("track_id").to_pylist(), dtype=object)
        for tid in sorted(t for t in by_track if t in tracks and tracks[t]["shard"] == shard):
            idx = np.flatnonzero(ids == tid)
            part = table.take(idx)
            notes.append((tid, notes_digest(by_track[tid], part)))
        stray = set(ids.tolist()) - set(by_track)
        if stray:
            problems.append(f"{path}: notes of tracks without pitch rows ({', '.join(sorted(stray))})")
    return notes, shards


def _check_root_copies(root: Path, snap: cf.CorpusLayout, shards, version: str,
                       pitch_shards=None) -> list[str]:
    """The root tables are copies (hard links) of the published snapshot, for tools that read
    the root: each must be the same bytes as its snapshot file."""
    problems = []
    rel_files = ["tracks.parquet", "stems.parquet", "rejects.parquet", "taxonomy.yaml",
                 *(f"activity/part-{s}.parquet" for s in sorted(shards))]
    if pitch_shards is not None:
        rel_files += ["pitch.parquet", *(f"notes/part-{s}.parquet" for s in pitch_shards)]
    for rel in rel_files:
        copy, original = root / rel, snap.root / rel
        try:
            same = copy.samefile(original) or file_digest(copy) == file_digest(original)
        except OSError:
            same = False
        if not same:
            problems.append(f"{copy}: differs from {original} of the published corpus_version "
                            f"{version[:12]} (modified after the build, or an interrupted build: "
                            f"re-run it)")
    return problems


def corpus_info(root: str | Path) -> dict:
    """Tracks per source and split, hours, per-instrument track counts and active fraction."""
    import polars as pl

    corpus = cf.Corpus(root)
    tracks = corpus.tracks
    by = (tracks.group_by(["source", "split"]).agg(pl.len().alias("tracks"),
                                                  (pl.col("duration_s").sum() / 3600).alias("hours"))
          .sort(["source", "split"]))
    parts = list(cf.iter_activity_parts(root))
    inst = {}
    if parts:
        agg = (pl.scan_parquet([str(p) for p in parts])
               .group_by("instrument")
               .agg(pl.col("track_id").n_unique().alias("tracks"),
                    pl.col("active").cast(pl.Float64).mean().alias("active_fraction"))
               .sort("instrument").collect())
        inst = {r["instrument"]: {"tracks": r["tracks"], "active_fraction": r["active_fraction"]}
                for r in agg.iter_rows(named=True)}
    unknown = {}
    for lst in tracks["unknown_instruments"].to_list():
        for i in lst or ():
            unknown[i] = unknown.get(i, 0) + 1
    m = corpus.manifest
    return {
        "corpus_version": m["corpus_version"], "format_version": m["format_version"],
        "hop": m["params"]["hop"], "tracks": tracks.height,
        "hours": float(tracks["duration_s"].sum() / 3600) if tracks.height else 0.0,
        "rejects": corpus.rejects.height,
        "by_source_split": [dict(r) for r in by.iter_rows(named=True)],
        "instruments": inst, "unknown_in_tracks": unknown,
        "duplicates": len(m.get("duplicates", [])),
        # instrument -> tracks where its pitch is known (empty: no pitch labels)
        "pitch": {i: sum(i in v for v in corpus.pitch_known.values())
                  for i in sorted({i for v in corpus.pitch_known.values() for i in v})},
    }
