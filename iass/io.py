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


WAV_SUBTYPES = ("FLOAT", "PCM_24")


def wav_header(n_frames: int, channels: int, sample_rate: int, subtype: str = "FLOAT") -> bytes:
    """RIFF/WAVE header: FLOAT = 32-bit IEEE float (fmt with cbSize + fact chunk, as libsndfile
    writes it), PCM_24 = 24-bit integer (plain fmt). The data chunk follows it directly."""
    import struct

    if subtype == "FLOAT":
        block = 4 * channels
        fmt = struct.pack("<HHIIHHH", 3, channels, sample_rate, sample_rate * block, block, 32, 0)
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, n_frames)
    elif subtype == "PCM_24":
        block = 3 * channels
        fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, 24)
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    else:
        raise ValueError(f"unsupported WAV subtype {subtype!r} (one of {', '.join(WAV_SUBTYPES)})")
    data_size = n_frames * block
    body = b"WAVE" + chunks + b"data" + struct.pack("<I", data_size)
    return b"RIFF" + struct.pack("<I", len(body) + data_size + data_size % 2) + body


def wav_data(audio, subtype: str = "FLOAT") -> memoryview:
    """The data chunk's bytes of ``audio`` (frames x channels; 1-D = mono), no copy for float32
    input. FLOAT: any float array, stored as float32. PCM_24: integers on the 24-bit grid
    (|x| < 2**23), stored as their low three bytes; floats are refused (no silent rounding)."""
    import numpy as np

    a = np.asarray(audio)
    if a.ndim == 1:
        a = a[:, None]
    if subtype == "FLOAT":
        return memoryview(np.ascontiguousarray(a, dtype="<f4")).cast("B")
    if subtype == "PCM_24":
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"PCM_24 takes integer samples on the 24-bit grid, got {a.dtype}")
        b = np.ascontiguousarray(a, dtype="<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        return memoryview(np.ascontiguousarray(b)).cast("B")
    raise ValueError(f"unsupported WAV subtype {subtype!r} (one of {', '.join(WAV_SUBTYPES)})")


def _wav_parts(audio, sample_rate: int, subtype: str) -> tuple[bytes, memoryview, bytes]:
    """(header, data, pad byte if the data length is odd): the file is their concatenation."""
    import numpy as np

    shape = np.shape(audio)
    frames, channels = shape[0], (shape[1] if len(shape) > 1 else 1)
    data = wav_data(audio, subtype)
    return wav_header(frames, channels, sample_rate, subtype), data, b"\0" * (len(data) % 2)


def wav_bytes(audio, sample_rate: int, subtype: str = "FLOAT") -> bytes:
    """A whole WAV file in memory (see :func:`write_wav`)."""
    header, data, pad = _wav_parts(audio, sample_rate, subtype)
    return header + bytes(data) + pad


def write_wav(path: str | os.PathLike, audio, sample_rate: int, subtype: str = "FLOAT",
              digest: str | None = None) -> tuple[str | None, int]:
    """Write ``audio`` (frames x channels) as a WAV file, atomically and byte-deterministically:
    the one WAV writer of the project (synthesized stems, the corpus' audio, test fixtures).

    Written by hand rather than through libsndfile, whose float WAVs carry a PEAK chunk with a
    wall-clock timestamp (two writes of the same samples would differ, and so would corpus
    versions); header + raw little-endian samples need no copy of float32 audio. soundfile and
    every WAV reader read it as usual. FLOAT keeps stems summing exactly to the mixture.
    ``digest``: a hashlib name; the file is hashed while it is written. Returns (hex digest or
    None, file size in bytes)."""
    parts = _wav_parts(audio, sample_rate, subtype)
    h = hashlib.new(digest) if digest else None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            for part in parts:
                fh.write(part)
                if h is not None:
                    h.update(part)
    return (h.hexdigest() if h is not None else None), sum(len(p) for p in parts)


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
