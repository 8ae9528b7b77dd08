"""Logging for the CLI. Library modules only do ``log = logging.getLogger(__name__)``; the CLI
sets the level once (``--quiet``: warnings and errors, ``--verbose``: debug) and the format."""
from __future__ import annotations

import logging
import sys

#: the logger every iass module's logger descends from
ROOT = "iass"


def setup_logging(verbosity: int = 0) -> None:
    """``verbosity`` -1 = quiet (warnings), 0 = info, 1 = debug (with logger names)."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logger = logging.getLogger(ROOT)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def progress_enabled() -> bool:
    """Progress bars only when iass logs at INFO or below (``--quiet`` hides them)."""
    return logging.getLogger(ROOT).getEffectiveLevel() <= logging.INFO
