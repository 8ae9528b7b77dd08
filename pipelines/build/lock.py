"""One build per output directory: ``<out>/.build.lock`` (pid and host of the holder)."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

from iass.pipelines.build.config import LOCK_NAME, BuildError, disk_error_message, is_disk_error

log = logging.getLogger(__name__)


@contextlib.contextmanager
def build_lock(out: Path):
    """Refuse a second build into the same directory; a stale lock of a dead local pid is taken over."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_s, _, host = path.read_text().strip().partition(" ")
                pid = int(pid_s)
            except (OSError, ValueError):
                pid, host = -1, ""
            if host == socket.gethostname() and not _pid_alive(pid):
                log.warning("warning: removing stale lock %s of a build (pid %s) that is gone", path, pid)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise BuildError(
                f"{path}: another corpus build (pid {pid} on {host or '?'}) is writing into {out}; "
                f"wait for it to finish, or delete the lock if that build is gone") from None
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
        except OSError as exc:  # a full disk: leave no empty lock that would refuse every build
            with contextlib.suppress(OSError):
                path.unlink()
            if is_disk_error(exc):
                raise BuildError(disk_error_message(out, exc)) from None
            raise
        break
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == me:
                path.unlink()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
