"""The Prefect 3 flow ``build_corpus`` and its tasks (imported by :func:`run_build` after
:func:`~iass.pipelines.build.run.prefect_environment` has set Prefect's offline defaults).

Task runs, as the Prefect UI and logs show them:

* ``discover`` (per source)
* ``process-track`` (one per track that the content cache cannot settle, run name
  ``track-<source>-<id>``), whose steps are nested task runs ``read-validate``, ``harmonize``,
  ``label`` and ``write`` (run names ``<step>-<source>-<id>``); a quarantined track stops at the
  step that found the problem, which logs the one-line reason
* ``split-guard``, then ``publish`` (tables, activity shards, manifest: the commit)
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from iass.pipelines import corpus_format as cf
from iass.pipelines.build import steps
from iass.pipelines.build.cache import cached_record
from iass.pipelines.build.config import BuildConfig, BuildError, disk_error_message, is_disk_error
from iass.pipelines.build.lock import build_lock
from iass.pipelines.build.publish import publish_corpus
from iass.pipelines.build.steps import _scrub, is_utf8, reject, run_track
from iass.pipelines.sources.base import TrackRef, get_adapter
from iass.pipelines.splits import SPLITS, SplitTrack, assign_splits, reference_tracks

log = logging.getLogger(__name__)

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


# ------------------------------------------------------------------------------- the tasks
@task(name="discover", **_TASK)
def discover_source(name: str, root: str, options: dict | None = None) -> list[TrackRef]:
    path = Path(root)
    if not path.is_dir():
        raise BuildError(f"source {name}: {root} is not a directory")
    return list(get_adapter(name, **(options or {})).discover(path))


read_validate = task(name="read-validate", retries=0, **_TASK)(steps.read_validate)
harmonize = task(name="harmonize", retries=0, **_TASK)(steps.harmonize_track)
label = task(name="label", retries=0, **_TASK)(steps.label_track_step)
write = task(name="write", retries=0, **_TASK)(steps.write_track)
STEP_TASKS = {steps.read_validate: read_validate, steps.harmonize_track: harmonize,
              steps.label_track_step: label, steps.write_track: write}


def task_step(fn, *args):
    """Run one step of a track as its nested Prefect task (plain call outside a task run)."""
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:  # e.g. process_track.fn(...) called directly
        return fn(*args)
    t = STEP_TASKS[fn]
    ref = args[0] if isinstance(args[0], TrackRef) else args[0].ref
    return t.with_options(task_run_name=f"{t.name}-{ref.source}-{ref.native_id}"[:100])(*args)


@task(name="process-track", retries=0, **_TASK)
def process_track(ref: TrackRef, cfg: BuildConfig) -> dict:
    """read + validate -> harmonize -> label -> write, for one track (cached; see the package doc)."""
    return run_track(ref, cfg, task_step)


def process_track_impl(ref: TrackRef, cfg: BuildConfig) -> dict:
    """The same steps as plain function calls (no Prefect)."""
    return run_track(ref, cfg)


@task(name="split-guard", **_TASK)
def split_guard(records: list[dict], split_params: dict):
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


publish_task = task(name="publish", **_TASK)(publish_corpus)


# -------------------------------------------------------------------------------- the flow
@flow(name="build_corpus", log_prints=False, persist_result=False, validate_parameters=False)
def build_corpus(cfg: BuildConfig, lock_held: bool = False):
    """Build (or update) the corpus under ``cfg.out``; returns the manifest plus run statistics.

    ``--strict`` with rejects ends the flow run Failed (a one-line message, no traceback)."""
    from prefect.states import Failed

    try:
        return _build(cfg, lock_held)
    except BuildError as exc:  # a Failed state with one line, not a logged traceback
        return Failed(message=str(exc))
    except OSError as exc:
        if is_disk_error(exc):
            return Failed(message=disk_error_message(Path(cfg.out), exc))
        raise


def _discover(cfg: BuildConfig) -> tuple[list[TrackRef], list[dict]]:
    """Every track of every source, less those quarantined at once: a file name the tables (UTF-8)
    cannot hold, and the same native id twice in one source (MUSDB's train/ and test/ both
    holding a song: which copy is right is unknowable, so every copy is quarantined)."""
    refs: list[TrackRef] = []
    for name, root in cfg.sources:
        refs.extend(discover_source.with_options(task_run_name=f"discover-{name}")(
            name, root, cfg.options_of(name) or None))
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


def _build(cfg: BuildConfig, lock_held: bool = False):
    from prefect.futures import as_completed
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(cfg.out)
    with contextlib.nullcontext() if lock_held else build_lock(out):
        from iass.io import clean_temp_files

        clean_temp_files(out)
        refs, results = _discover(cfg)
        n_dup = len(results)
        todo = []
        for r in refs:  # unchanged tracks are settled here: no task, no audio
            hit = cached_record(r, cfg)
            if hit is None:
                todo.append(r)
            else:
                results.append(hit)
        # the flow's task runner (threads | processes | dask) runs these; see run_build
        futures = [process_track.with_options(task_run_name=f"track-{r.source}-{r.native_id}"[:100])
                   .submit(r, cfg) for r in todo]
        bar = tqdm(total=len(refs) + n_dup, initial=len(results), desc="corpus", unit="track",
                   disable=not cfg.progress, file=sys.stderr)
        for fut in as_completed(futures):
            res = fut.result()
            if res["status"] == "failed":  # the output, not the track, is at fault (full disk)
                raise BuildError(res["error"])
            results.append(res)
            bar.update(1)
        bar.close()
        records = sorted((r for r in results if r["status"] != "rejected"), key=lambda r: r["track_id"])
        rejects = sorted((r["reject"] for r in results if r["status"] == "rejected"),
                         key=lambda r: (r["source"], r["native_id"], r["stage"], r["path"]))
        for rj in rejects:  # one line each: what was quarantined and why (also rejects.parquet)
            log.warning("rejected %s:%s (%s) %s: %s", rj["source"], rj["native_id"], rj["stage"],
                        rj["path"], rj["reason"])
        if cfg.strict and rejects:
            from prefect.states import Failed

            first = rejects[0]
            return Failed(message=(
                f"--strict: {len(rejects)} track(s) rejected; first: {first['source']}:"
                f"{first['native_id']} ({first['stage']}) {first['path']}: {first['reason']}"))
        split = split_guard(records, cfg.split_params)
        pub = publish_task(cfg, records, rejects, split)
        manifest = pub["manifest"]
        stats = {"built": 0, "cached": 0, "relabelled": 0, "rejected": len(rejects)}
        for r in records:
            stats[r["status"]] = stats.get(r["status"], 0) + 1
        elapsed = time.perf_counter() - t0
        by_split = pub["by_split"]
        summary = (f"corpus {manifest['corpus_version'][:12]} -> {out}: {pub['tracks']} tracks "
                   f"({stats['built']} built, {stats['cached']} cached, {stats['relabelled']} "
                   f"relabelled), {len(rejects)} rejected, {manifest['counts']['hours']:.2f} h, "
                   f"{len(split.duplicates)} duplicate group(s), splits "
                   f"{'/'.join(str(by_split[s]) for s in SPLITS)} (train/valid/test), "
                   f"{elapsed:.1f} s")
        return {"manifest": manifest, "stats": stats, "shards": pub["shards"], "summary": summary,
                "worker_pids": sorted({r["pid"] for r in results}),
                "elapsed_s": elapsed, "unchanged": pub["unchanged"]}


def task_runner(cfg: BuildConfig):
    if cfg.runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.runner == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})
