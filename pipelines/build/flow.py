"""The Prefect 3 flow ``build_corpus`` and its tasks (imported by :func:`run_build` after
:func:`~iass.pipelines.build.run.prefect_environment` has set Prefect's offline defaults).

Task runs, as the Prefect UI and logs show them:

* ``discover`` (per source)
* ``process-track`` (one per track that the content cache cannot settle, run name
  ``track-<source>-<id>``): read + validate, harmonize, label and write, as plain calls (each
  step's time in the result's ``step_s`` and the debug log); a quarantined track stops at the
  step that found the problem, which logs the one-line reason and names the step (``stage``).
  The steps were nested task runs once: on 2 cores their API traffic (~50 ms of the machine's CPU
  per task run, server included) cost more than a step of a 1-minute track (docs/speed.md)
* ``split-guard``, then ``publish`` (tables, activity shards, manifest: the commit)
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from iass.pipelines.build.config import BuildConfig, BuildError, disk_error_message, is_disk_error
from iass.pipelines.build.lock import build_lock
from iass.pipelines.build.publish import publish_corpus
from iass.pipelines.build.plan import (
    assign_split, discover_plain, discover_tracks, finish, settle_cached, split_results,
)
from iass.pipelines.build.steps import run_track
from iass.pipelines.sources.base import TrackRef

log = logging.getLogger(__name__)

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


# ------------------------------------------------------------------------------- the tasks
@task(name="discover", **_TASK)
def discover_source(name: str, root: str, options: dict | None = None) -> list[TrackRef]:
    return discover_plain(name, root, options)


@task(name="process-track", retries=0, **_TASK)
def process_track(ref: TrackRef, cfg: BuildConfig) -> dict:
    """read + validate -> harmonize -> label -> write, for one track (cached; see the package doc)."""
    return run_track(ref, cfg)


@task(name="split-guard", **_TASK)
def split_guard(records: list[dict], split_params: dict):
    return assign_split(records, split_params)


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
    """Every track of every source (a ``discover-<source>`` task run each), less those
    quarantined at once (see :func:`~iass.pipelines.build.plan.discover_tracks`)."""
    def discover(name, root, options):
        return discover_source.with_options(task_run_name=f"discover-{name}")(name, root, options)

    return discover_tracks(cfg, discover)


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
        todo = settle_cached(refs, cfg, results)  # unchanged tracks: no task, no audio
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
        records, rejects = split_results(results)
        for rj in rejects:  # one line each: what was quarantined and why (also rejects.parquet)
            log.warning("rejected %s:%s (%s) %s: %s", rj["source"], rj["native_id"], rj["stage"],
                        rj["path"], rj["reason"])
        if cfg.strict and rejects:
            from prefect.states import Failed

            first = rejects[0]
            return Failed(message=(
                f"--strict: {len(rejects)} track(s) rejected; first: {first['source']}:"
                f"{first['native_id']} ({first['stage']}) {first['path']}: {first['reason']}"))
        return finish(cfg, records, rejects, results, t0, guard=split_guard, publish=publish_task)


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
