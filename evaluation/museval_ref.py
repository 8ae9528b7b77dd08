"""Import ``museval`` (the reference BSS Eval v4) for comparisons in tests and benchmarks.

``import museval`` imports musdb, which imports stempeg, which refuses to load unless both
``ffmpeg`` and ``ffprobe`` are on PATH, although ``museval.evaluate`` never decodes audio. We ship
no system ffmpeg (imageio-ffmpeg's binary, no ffprobe), so this puts a private folder on PATH
holding links named ``ffmpeg`` and ``ffprobe`` to imageio-ffmpeg's binary before the import. Only
the import check sees the ffprobe link; nothing here ever runs it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def import_museval():
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        folder = Path(tempfile.gettempdir()) / f"iass-museval-bin-{os.getuid()}"
        folder.mkdir(exist_ok=True)
        for name in ("ffmpeg", "ffprobe"):
            link = folder / name
            if not link.exists():
                try:
                    link.symlink_to(exe)
                except FileExistsError:  # another process made it first
                    pass
        os.environ["PATH"] = f"{os.environ.get('PATH', '')}{os.pathsep}{folder}"
    import museval

    return museval
