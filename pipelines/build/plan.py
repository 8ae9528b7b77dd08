"""What a build has to do, decided without Prefect: every track discovered, the ones the content
cache settles (unchanged: no task, no audio), and the tail every build ends with (split guard,
publish, summary). The flow (:mod:`.flow`) runs the same functions, with the per-track work and
the tail as Prefect tasks; :func:`build_if_settled` runs them plainly when no track has work, so a
no-change rebuild answers in about a second instead of starting Prefect's server (~15-20 s)."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Callable

from iass.pipelines import corpus_format as cf
from iass.pipelines.build.cache import cached_record
from iass.pipelines.build.config import BuildConfig, BuildError
from iass.pipelines.build.lock import build_lock
from iass.pipelines.build.steps import _scrub, is_utf8, reject
from iass.pipelines.sources.base import TrackRef, get_adapter
from iass.pipelines.splits import SPLITS, SplitTrack, assign_splits, reference_tracks

log = logging.getLogger(__name__)


def discover_plain(name: str, root: str, options: dict | None = None) -> list[TrackRef]:
    """One source's tracks (the body of the flow's ``discover`` task)."""
    path = Path(root)
    if not path.is_dir():
        raise BuildError(f"source {name}: {root} is not a directory")
    return list(get_adapter(name, **(options or {})).discover(path))


def discover_tracks(cfg: BuildConfig, discover: Callable = discover_plain) -> tuple[list[TrackRef], list[dict]]:
    """Every track of every source, less those quarantined at once: a file name the tables (UTF-8)
    cannot hold, and the same native id twice in one source (MUSDB's train/ and test/ both
    holding a song: which copy is right is unknowable, so every copy is quarantined)."""
    refs: list[TrackRef] = []
    for name, root in cfg.sources:
        refs.extend(discover(name, root, cfg.options_of(name) or None))
    by_id: dict[str, list[TrackRef]] = {}
    results: list[dict] = []
    for r in refs:
        if not is_utf8(r.native_id):
            results.append(reject(r, "discover", str(r.location),
                                  "file name is not valid UTF-8: rename the track", cfg))
            results[-1]["pid"] = os.getpid()
            continue
        by_id.setdefault(cf.make_track_id(r.source, r.native_id), []).append(r)
    refs = []
    for tid, group in by_id.items():
        if len(group) == 1:
            refs.append(group[0])
            continue
        where = ", ".join(_scrub(str(g.location), cfg.sources) for g in group)
        for g in group:
            results.append(reject(g, "discover", str(g.location),
                                  f"duplicate track id {tid}: {len(group)} tracks of {g.source} "
                                  f"have the native id {g.native_id!r} ({where})", cfg))
            results[-1]["pid"] = os.getpid()
    return refs, results


def settle_cached(refs: list[TrackRef], cfg: BuildConfig, results: list[dict]) -> list[TrackRef]:
    """Append the cache's record of every unchanged track to ``results``; return the others."""
    todo = []
    for r in refs:
        hit = cached_record(r, cfg)
        if hit is None:
            todo.append(r)
        else:
            results.append(hit)
    return todo


def assign_split(records: list[dict], split_params: dict):
    """The split guard over the records (the body of the flow's ``split-guard`` task)."""
    declared = split_params.get("declared") or {}
    items = []
    for r in records:
        t = r["track"]
        d = (declared.get(r["source"]) or {}).get(r["native_id"]) or r.get("declared_split")
        items.append(SplitTrack(track_id=r["track_id"], source=r["source"], native_id=r["native_id"],
                                artist=t["artist"], title=t["title"], declared=d,
                                fingerprint=t["fingerprint"]))
    # declared songs the build does not hold (MUSDB's official split in a build without MUSDB)
    reference = reference_tracks(declared, ((r["source"], r["native_id"]) for r in records))
    try:
        return assign_splits(items, seed=int(split_params.get("seed", 0)),
                             valid_fraction=float(split_params.get("valid_fraction", 0.15)),
                             test_fraction=float(split_params.get("test_fraction", 0.2)),
                             song_level_artists=split_params.get("song_level_artists") or (),
                             reference=reference)
    except ValueError as exc:
        raise BuildError(f"split guard: {exc}") from None


def split_results(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(records sorted by track id, rejects sorted by source, id, stage, path)."""
    records = sorted((r for r in results if r["status"] != "rejected"), key=lambda r: r["track_id"])
    rejects = sorted((r["reject"] for r in results if r["status"] == "rejected"),
                     key=lambda r: (r["source"], r["native_id"], r["stage"], r["path"]))
    return records, rejects


def finish(cfg: BuildConfig, records: list[dict], rejects: list[dict], results: list[dict], t0: float,
           guard: Callable = assign_split, publish: Callable | None = None) -> dict:
    """Split guard, publish (a no-op when the published version is this one), the summary."""
    if publish is None:
        from iass.pipelines.build.publish import publish_corpus as publish
    split = guard(records, cfg.split_params)
    pub = publish(cfg, records, rejects, split)
    manifest = pub["manifest"]
    stats = {"built": 0, "cached": 0, "relabelled": 0, "rejected": len(rejects)}
    for r in records:
        stats[r["status"]] = stats.get(r["status"], 0) + 1
    elapsed = time.perf_counter() - t0
    by_split = pub["by_split"]
    summary = (f"corpus {manifest['corpus_version'][:12]} -> {cfg.out}: {pub['tracks']} tracks "
               f"({stats['built']} built, {stats['cached']} cached, {stats['relabelled']} "
               f"relabelled), {len(rejects)} rejected, {manifest['counts']['hours']:.2f} h, "
               f"{len(split.duplicates)} duplicate group(s), splits "
               f"{'/'.join(str(by_split[s]) for s in SPLITS)} (train/valid/test), "
               f"{elapsed:.1f} s")
    return {"manifest": manifest, "stats": stats, "shards": pub["shards"], "summary": summary,
            "worker_pids": sorted({r["pid"] for r in results}),
            "elapsed_s": elapsed, "unchanged": pub["unchanged"], "flow_run": True}


def build_if_settled(cfg: BuildConfig, lock_held: bool = False) -> dict | None:
    """The whole build without Prefect when the cache settles every track and nothing was
    quarantined (the tables are then re-derived from the cached records and published only if
    they changed, e.g. new split params); None when some track has work (or a reject to report),
    which is the flow's job."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if not cf.CorpusLayout(out).manifest.exists():
        return None  # a first build: the flow's
    with contextlib.nullcontext() if lock_held else build_lock(out):
        from iass.io import clean_temp_files

        clean_temp_files(out)
        refs, results = discover_tracks(cfg)
        if results or settle_cached(refs, cfg, results):
            return None
        records, rejects = split_results(results)
        result = finish(cfg, records, rejects, results, t0)
    result["flow_run"] = False
    log.info("every track unchanged (content cache): published without a flow run")
    return result
