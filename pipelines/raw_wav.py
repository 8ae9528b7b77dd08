"""Corpus WAV reads without a decoder: a RIFF/WAVE file of little-endian float32 samples (what
``iass.io.write_wav`` writes for the corpus) is read with ``os.preadv`` straight into a caller's
array. Used by :class:`iass.pipelines.corpus_format.Corpus` for the training loader; any other
file (or a platform without ``preadv``) goes through libsndfile there."""
from __future__ import annotations

import contextlib
import os
import struct
import sys
from pathlib import Path

import numpy as np

#: corpus WAVs a reader keeps open (one descriptor each; no audio is cached)
RAW_OPEN_FILES = 64


class RawWav:
    """An open RIFF/WAVE file of little-endian float32 samples (what ``iass.io.write_wav``
    writes): its data chunk is read with ``os.preadv`` straight into a caller's float32 array,
    the same values libsndfile returns for it."""

    def __init__(self, fd: int, data_offset: int, frames: int, channels: int):
        self.fd, self.data_offset, self.frames, self.channels = fd, data_offset, frames, channels

    @classmethod
    def open(cls, path: Path) -> "RawWav | None":
        if sys.byteorder != "little" or not hasattr(os, "preadv"):  # e.g. Windows: libsndfile
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None           # libsndfile names the file in its error
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, 12, 0)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise ValueError
            pos, fmt = 12, None
            while pos + 8 <= size:
                cid, csize = struct.unpack("<4sI", os.pread(fd, 8, pos))
                if cid == b"fmt ":
                    fmt = struct.unpack("<HHIIHH", os.pread(fd, 16, pos + 8))
                elif cid == b"data":
                    if fmt is None or fmt[0] != 3 or fmt[5] != 32 or fmt[1] < 1:
                        raise ValueError  # not IEEE float32 (WAVE_FORMAT_IEEE_FLOAT)
                    channels = fmt[1]
                    nbytes = min(csize, size - pos - 8)
                    return cls(fd, pos + 8, nbytes // (4 * channels), channels)
                pos += 8 + csize + (csize & 1)
            raise ValueError
        except (OSError, ValueError, struct.error):
            os.close(fd)
            return None

    def read_into(self, out: np.ndarray, start: int) -> None:
        """``out`` (frames, channels) C-contiguous float32 <- frames from ``start``; zeros past the end."""
        n = max(min(len(out), self.frames - start), 0)
        if n:
            view = memoryview(out[:n].reshape(-1).view(np.uint8))
            got = os.preadv(self.fd, [view], self.data_offset + start * 4 * self.channels)
            if got != view.nbytes:
                raise OSError(f"short read of a corpus WAV ({got} of {view.nbytes} bytes)")
        out[n:] = 0.0

    def close(self, _close=os.close) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _close(fd)

    def __del__(self):
        with contextlib.suppress(OSError, TypeError, AttributeError):
            self.close()
