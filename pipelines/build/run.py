"""Running a build: Prefect's offline defaults, the checks that need no Prefect, the lock, and
the flow. Nothing here imports Prefect at module level, and nothing changes the environment
until a build runs."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from iass import REPO_ROOT
from iass.pipelines.build.config import BuildConfig, BuildError, disk_error_message, is_disk_error
from iass.pipelines.build.lock import build_lock
from iass.pipelines.build.plan import build_if_settled

log = logging.getLogger(__name__)


def prefect_defaults() -> dict[str, str]:
    """Prefect settings a build runs with unless the user set them: a project-local home (the
    SQLite of the embedded server), no telemetry (it errors offline), quiet logs, and a server
    start timeout a loaded 2-core CI box needs (> 20 s). The Makefile exports the same."""
    return {
        "PREFECT_HOME": str(REPO_ROOT / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }


def prefect_environment() -> dict[str, str]:
    """Apply :func:`prefect_defaults` for this process (a user's own settings win); returns the
    variables it set. Called by :func:`run_build` (and the CLI) before the flow starts.

    Prefect 3 reads its settings from the environment when it is imported (the process-global
    settings context), and the embedded server, a subprocess, inherits the environment. So the
    variables are set in ``os.environ``; if Prefect is already imported and no settings context
    of its own is in force (``temporary_settings``, a test harness), its global settings and log
    levels are re-read so that the new values take effect."""
    changed = {k: v for k, v in prefect_defaults().items() if k not in os.environ}
    os.environ.update(changed)
    if changed and "prefect.context" in sys.modules:
        import prefect.context as pctx

        if pctx.SettingsContext.get() is pctx.GLOBAL_SETTINGS_CONTEXT:
            pctx.refresh_global_settings_context()
            from prefect.logging.configuration import setup_logging

            setup_logging()
    return changed


def preflight(cfg: BuildConfig) -> None:
    """Checks that need no Prefect: fail in one line before a server starts."""
    from iass.pipelines.sources.base import get_adapter

    for name, root in cfg.sources:
        if not Path(root).is_dir():
            raise BuildError(f"source {name}: {root} is not a directory (params.yaml `sources:` or --source)")
        get_adapter(name, **cfg.options_of(name))  # an unknown source or option fails here


def run_build(cfg: BuildConfig, *, always_flow: bool = False) -> dict:
    """Run the flow (Prefect's embedded server unless PREFECT_API_URL points at one).

    The lock is taken here, before Prefect starts, so a concurrent build is refused at once.
    When the content cache settles every track (a no-change rebuild, or only split params
    changed), the build finishes without Prefect (:func:`~.plan.build_if_settled`): about a
    second instead of the embedded server's start; ``always_flow`` runs the flow regardless."""
    preflight(cfg)
    with build_lock(Path(cfg.out)):
        if not always_flow:
            try:
                settled = build_if_settled(cfg, lock_held=True)
            except OSError as exc:
                if is_disk_error(exc):
                    raise BuildError(disk_error_message(Path(cfg.out), exc)) from None
                raise
            if settled is not None:
                return settled
        prefect_environment()
        from prefect.exceptions import FailedRun

        from iass.pipelines.build.flow import build_corpus, task_runner

        try:
            flow_run = build_corpus.with_options(task_runner=task_runner(cfg))
            return flow_run(cfg, lock_held=True)
        except FailedRun as exc:
            raise BuildError(str(exc)) from None
        except OSError as exc:
            if is_disk_error(exc):
                raise BuildError(disk_error_message(Path(cfg.out), exc)) from None
            raise
