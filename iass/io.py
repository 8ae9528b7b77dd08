"""Atomic file writes and stable hashing, shared by every writer in the project.

Every artifact is written to a temporary file in the destination folder and renamed into place,
so a partial file is never visible under its final name (a kill leaves only ``*.tmp-*`` litter,
which :func:`clean_temp_files` removes on the next run).
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

TMP_MARK = ".tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)

# Fault injection for the reliability suite (tests/reliability): IASS_FAULT_KILL_AT="N[:GLOB]"
# SIGKILLs this process at the N-th atomic write (counting only files whose name matches GLOB),
# after the temp file is complete and before its rename: the moment a torn write would show.
_FAULT = os.environ.get("IASS_FAULT_KILL_AT", "")
_fault_lock = threading.Lock()
_fault_count = 0


def _fault_point(path: Path) -> None:
    global _fault_count
    nth, _, pattern = _FAULT.partition(":")
    if pattern and not fnmatch.fnmatch(path.name, pattern):
        return
    with _fault_lock:
        _fault_count += 1
        if _fault_count == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + TMP_MARK, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; shared corpora need the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        if _FAULT:
            _fault_point(path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_link(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` the same file as ``src`` atomically: a hard link (no copy) renamed into place,
    or a copy where the file system has no hard links. A reader sees the old or the new file."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        try:
            os.link(src, tmp)
        except OSError:  # EXDEV, EPERM, a file system without links: copy instead
            import shutil

            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        if _FAULT:
            _fault_point(dst)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def wav_bytes(audio, sample_rate: int, subtype: str = "FLOAT") -> memoryview:
    """WAV file bytes, deterministic: libsndfile stamps the wall-clock time into the PEAK chunk
    of float WAVs, which would make identical audio give different bytes (and corpus versions);
    that timestamp is zeroed. Returned as a view of the in-memory file (no extra copy)."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio), sample_rate, subtype=subtype, format="WAV")
    view = buf.getbuffer()
    pos = bytes(view[:512]).find(b"PEAK", 12)
    if pos >= 0:
        view[pos + 12: pos + 16] = b"\0\0\0\0"  # after id(4) size(4) version(4): timestamp(4)
    return view


def atomic_write_wav(path: str | os.PathLike, audio, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``audio`` (frames x channels) as WAV atomically and byte-deterministically.
    FLOAT keeps stems summing exactly to the mixture."""
    atomic_write_bytes(path, wav_bytes(audio, sample_rate, subtype))


def atomic_write_parquet(path: str | os.PathLike, table) -> None:
    """Write a polars DataFrame or pyarrow Table to Parquet atomically (zstd, no timestamps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = table.to_arrow()
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp), compression="zstd")


def clean_temp_files(root: str | os.PathLike) -> int:
    """Remove temp files left by a killed writer under ``root``; return how many."""
    n = 0
    for p in Path(root).rglob(f"*{TMP_MARK}*"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def file_digest(path: str | os.PathLike, algo: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of a file's bytes, read in blocks: any hashlib algorithm, or ``xxh3_128``
    (fast, for cache keys)."""
    if algo == "xxh3_128":
        import xxhash

        h = xxhash.xxh3_128()
    else:
        h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, n: int | None = None) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys): the same on every machine."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    digest = hashlib.sha256(blob).hexdigest()
    return digest[:n] if n else digest


def array_digest(array) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    import numpy as np

    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def buffer_to_bytes(write_fn) -> bytes:
    buf = io.BytesIO()
    write_fn(buf)
    return buf.getvalue()
