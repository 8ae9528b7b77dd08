"""Audio reading and validation shared by the source adapters.

Reads WAV (8/16/24/32-bit int, float), FLAC and MP3 through libsndfile (soundfile), and the
streams of an MP4 (MUSDB18 ``.stem.mp4``) through the ffmpeg binary that the imageio-ffmpeg wheel
ships, so decoding works after ``make setup`` alone (no system ffmpeg/ffprobe).

Every track is brought to one shape: float32 ``(frames, 2)`` at the requested rate. What had to
be changed to get there is recorded, never hidden: a resampled file, a mono stem duplicated to
stereo, a short tail zero-padded. What cannot be repaired is a :class:`TrackError` naming the
file: missing or unreadable audio, NaN/inf samples, more than two channels, stems of one track
at different rates, lengths that differ by more than ``max_pad_seconds``, and any file name that
escapes the track folder (``../``, absolute paths, symlinks out of the source root).
"""
from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from iass.pipelines.sources.base import SourceTrack, TrackAudio, TrackError

#: lengths within this many seconds are zero-padded to the longest (recorded); more is an error
DEFAULT_MAX_PAD_SECONDS = 1.0
MP4_SUFFIXES = (".mp4", ".m4a")
#: key of the mixture among a track's files (cannot clash with a stem id)
MIXTURE = "<mixture>"


# ---------------------------------------------------------------- paths and metadata files


def safe_join(root: str | Path, base: str | Path, name: str | os.PathLike, *, native_id=None) -> Path:
    """``base / name``, refused unless it stays inside ``base`` and, resolved, inside ``root``.

    ``name`` comes from metadata written by others: an absolute path, a ``..`` component or a
    symlink pointing out of the source root must never make us read another file.
    """
    name_str = os.fspath(name)
    base = Path(base)
    if not name_str or name_str.strip() != name_str:
        raise TrackError(base / name_str, f"invalid file name {name_str!r} in the metadata", native_id)
    rel = Path(name_str)
    if rel.is_absolute() or name_str.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name_str):
        raise TrackError(name_str, "absolute file name in the metadata (must be relative to the track folder)", native_id)
    if ".." in rel.parts or ".." in re.split(r"[\\/]", name_str):
        raise TrackError(base / rel, "file name escapes the track folder ('..')", native_id)
    path = base / rel
    root_resolved = Path(root).resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(root_resolved):
        raise TrackError(path, f"resolves outside the source root {root_resolved} (symlink?)", native_id)
    return path


def read_yaml_mapping(path: str | Path, *, native_id=None) -> dict[str, Any]:
    """A YAML file that must hold a mapping; safe loader only (no python/object tags)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise TrackError(path, f"cannot read metadata ({exc.strerror or exc})", native_id) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = " ".join(str(exc).split())
        raise TrackError(path, f"not valid YAML for the safe loader ({msg[:200]})", native_id) from None
    if not isinstance(doc, dict):
        raise TrackError(path, f"metadata must be a YAML mapping, got {type(doc).__name__}", native_id)
    return doc


# ---------------------------------------------------------------- headers


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int               # for MP4 streams: from the container duration (approximate)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5,
                    "5.1": 6, "6.1": 7, "7.1": 8}
_AUDIO_RE = re.compile(r"Stream #0:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: Audio: ([^\n]*)")


def probe_mp4(path: str | Path) -> list[AudioInfo]:
    """The audio streams of an MP4, in order, from ffmpeg's stream listing (no ffprobe needed)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise TrackError(path, "missing file") from None
    return list(_probe_mp4_cached(str(path), st.st_mtime_ns, st.st_size))


@lru_cache(maxsize=64)
def _probe_mp4_cached(path_str: str, _mtime_ns: int, _size: int) -> tuple[AudioInfo, ...]:
    # one .stem.mp4 holds five streams: probe it once, not once per stem
    path = Path(path_str)
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True, text=True, errors="replace",
    )
    err = proc.stderr
    if "Invalid data found" in err or "moov atom not found" in err or "No such file" in err:
        raise TrackError(path, "unreadable MP4 (ffmpeg: invalid data)")
    m = _DURATION_RE.search(err)
    duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else 0.0
    streams = []
    for _index, desc in _AUDIO_RE.findall(err):
        rate = re.search(r"(\d+) Hz", desc)
        if not rate:
            continue
        parts = [p.strip() for p in desc.split(",")]
        at = next(i for i, p in enumerate(parts) if re.search(r"\d+ Hz", p))
        layout = parts[at + 1] if at + 1 < len(parts) else ""
        ch = re.match(r"(\d+) channels", layout)
        channels = int(ch[1]) if ch else _LAYOUT_CHANNELS.get(layout.split("(")[0], 2)
        sr = int(rate[1])
        streams.append(AudioInfo(sr, channels, int(round(duration * sr))))
    if not streams:
        raise TrackError(path, "no audio stream found (ffmpeg could not read it)")
    return tuple(streams)


def audio_info(path: str | Path, stream: int | None = None) -> AudioInfo:
    """Header-only facts about an audio file (or one stream of an MP4)."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise TrackError(path, "missing file")
    if not path.is_file():
        raise TrackError(path, "not a regular file")
    if path.suffix.lower() in MP4_SUFFIXES or stream is not None:
        streams = probe_mp4(path)
        idx = stream or 0
        if idx >= len(streams):
            raise TrackError(path, f"has {len(streams)} audio streams; stream {idx} is missing")
        return streams[idx]
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for garbage
        raise TrackError(path, f"unreadable audio ({' '.join(str(exc).split())[:160]})") from None
    if info.frames <= 0:
        raise TrackError(path, "empty audio file (0 frames)")
    truncated = wav_truncation(path)
    if truncated:
        raise TrackError(path, truncated)
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def wav_truncation(path: str | Path) -> str | None:
    """Why a RIFF/WAVE file is cut short (its data chunk declares more bytes than the file holds),
    or None. libsndfile quietly reads what is there, so a file cut by a failed copy would pass as
    a shorter take and be zero-padded; a truncated file is an error instead."""
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None  # RF64, W64, AIFF, FLAC...: not checked here
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                cid, csize = struct.unpack("<4sI", fh.read(8))
                if cid == b"data":
                    have = size - (pos + 8)
                    if csize not in (0, 0xFFFFFFFF) and csize > have:
                        return (f"truncated WAV: the data chunk declares {csize} bytes, "
                                f"the file holds {have}")
                    return None
                pos += 8 + csize + (csize & 1)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None


# ---------------------------------------------------------------- decoding


def read_audio(path: str | Path, stream: int | None = None) -> tuple[np.ndarray, int]:
    """Decode to float32 ``(frames, channels)`` at the file's own rate."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise TrackError(path, "missing file")
    if path.suffix.lower() in MP4_SUFFIXES or stream is not None:
        return _read_mp4_stream(path, stream or 0)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise TrackError(path, f"unreadable audio ({' '.join(str(exc).split())[:160]})") from None
    return audio, int(sr)


def _read_mp4_stream(path: Path, stream: int) -> tuple[np.ndarray, int]:
    info = audio_info(path, stream)
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
        "-map", f"0:a:{stream}", "-vn", "-f", "f32le", "-c:a", "pcm_f32le", "-ac", str(info.channels), "-",
    ]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = " ".join(proc.stderr.decode(errors="replace").split())[:200]
        raise TrackError(path, f"ffmpeg could not decode stream {stream} ({msg})")
    audio = np.frombuffer(proc.stdout, dtype="<f4")
    if audio.size == 0 or audio.size % info.channels:
        raise TrackError(path, f"stream {stream} decoded to {audio.size} samples (not {info.channels}-channel)")
    return audio.reshape(-1, info.channels).astype(np.float32, copy=True), info.sample_rate


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """soxr high-quality resampling along time (frames, channels)."""
    if sr_in == sr_out:
        return audio
    import soxr

    return np.ascontiguousarray(soxr.resample(audio, sr_in, sr_out, quality="HQ"), dtype=np.float32)


def to_stereo(audio: np.ndarray, path: str | Path) -> tuple[np.ndarray, bool]:
    """(frames, 2); mono is duplicated (returns True); more than 2 channels is an error."""
    ch = audio.shape[1]
    if ch == 2:
        return audio, False
    if ch == 1:
        return np.repeat(audio, 2, axis=1), True
    raise TrackError(path, f"{ch} channels (only mono or stereo stems are supported)")


def check_finite(audio: np.ndarray, path: str | Path) -> None:
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise TrackError(path, f"{bad} NaN/inf samples")


def load_audio_file(path, stream, sample_rate: int, warnings: list[str], label: str) -> np.ndarray:
    """Decode one file to float32 stereo at ``sample_rate``, appending what was changed."""
    audio, sr = read_audio(path, stream)
    if audio.shape[0] == 0:
        raise TrackError(path, "empty audio (0 frames)")
    check_finite(audio, path)
    audio, was_mono = to_stereo(audio, path)
    if was_mono:
        warnings.append(f"{label}: mono, duplicated to stereo ({Path(path).name})")
    if sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
        warnings.append(f"{label}: resampled {sr} -> {sample_rate} Hz ({Path(path).name})")
    return audio


# ---------------------------------------------------------------- whole tracks


def _track_files(track: SourceTrack) -> list[tuple[str, Path, int | None]]:
    files = [(s.stem_id, s.path, s.stream) for s in track.stems]
    if track.mixture_path is not None:
        files.append((MIXTURE, track.mixture_path, track.mixture_stream))
    return files


def _check_inside_root(track: SourceTrack, path: Path) -> str | None:
    try:
        resolved = Path(path).resolve()
    except OSError as exc:
        return f"{path}: cannot resolve ({exc})"
    if not resolved.is_relative_to(Path(track.root).resolve()):
        return f"{path}: resolves outside the source root {Path(track.root).resolve()} (symlink?)"
    return None


def _odd_rates(rates: dict[Path, int]) -> list[tuple[Path, str]]:
    """Files whose rate differs from the track's (the most common rate; ties: the first file's).

    Stems recorded at different rates do not belong together: that is an error, not a resample.
    """
    if len(set(rates.values())) <= 1:
        return []
    counts = Counter(rates.values())
    first = next(iter(rates.values()))
    track_rate = max(counts, key=lambda r: (counts[r], r == first))
    return [(p, f"sample rate {r} Hz differs from the other files of the track ({track_rate} Hz)")
            for p, r in rates.items() if r != track_rate]


def validate_track_files(track: SourceTrack, max_pad_seconds: float = DEFAULT_MAX_PAD_SECONDS) -> list[str]:
    """Header-only checks of every file of a track; one line per problem (empty = valid).

    Checks: each file exists, lies inside the source root, has a readable header, 1 or 2
    channels; all files share one sample rate; lengths agree within ``max_pad_seconds``.
    """
    problems: list[str] = []
    if not track.stems:
        problems.append(f"{track.native_id}: no stems")
    infos: dict[str, tuple[Path, AudioInfo]] = {}
    for name, path, stream in _track_files(track):
        outside = _check_inside_root(track, path)
        if outside:
            problems.append(outside)
            continue
        try:
            info = audio_info(path, stream)
        except TrackError as exc:
            problems.append(str(exc))
            continue
        if info.channels not in (1, 2):
            problems.append(f"{path}: {info.channels} channels (only mono or stereo)")
        infos[name] = (path, info)
    if infos:
        odd = _odd_rates({p: i.sample_rate for p, i in infos.values()})
        problems += [f"{path}: {msg}" for path, msg in odd]
        if not odd:
            longest = max(i.duration for _, i in infos.values())
            for name, (path, info) in infos.items():
                short = longest - info.duration
                if short > max_pad_seconds + 1e-6:
                    problems.append(
                        f"{path}: {info.duration:.3f} s, {short:.3f} s shorter than the longest file "
                        f"of the track (more than the {max_pad_seconds:g} s that may be padded)"
                    )
    return problems


def load_track_audio(
    track: SourceTrack, sample_rate: int = 44100, max_pad_seconds: float = DEFAULT_MAX_PAD_SECONDS
) -> TrackAudio:
    """Decode, check and align every stem (and the mixture) of a track.

    Returns float32 ``(frames, 2)`` arrays, all of the same length at ``sample_rate``. Raises
    TrackError naming the file for anything that cannot be repaired.
    """
    warnings: list[str] = list(track.warnings)
    if not track.stems:
        raise TrackError(track.root, "track has no stems", track.native_id)
    # one shared source rate: stems recorded at different rates do not belong together
    rates: dict[Path, int] = {}
    for _name, path, stream in _track_files(track):
        outside = _check_inside_root(track, path)
        if outside:
            raise TrackError(path, outside.split(": ", 1)[1], track.native_id)
        rates[path] = audio_info(path, stream).sample_rate
    odd = _odd_rates(rates)
    if odd:
        raise TrackError(odd[0][0], odd[0][1], track.native_id)

    decoded: dict[str, tuple[Path, np.ndarray]] = {}
    for name, path, stream in _track_files(track):
        try:
            label = "mixture" if name == MIXTURE else f"stem {name}"
            decoded[name] = (path, load_audio_file(path, stream, sample_rate, warnings, label))
        except TrackError as exc:
            raise TrackError(exc.path, exc.reason, track.native_id) from None
    longest = max(a.shape[0] for _, a in decoded.values())
    max_pad = int(round(max_pad_seconds * sample_rate))
    out: dict[str, np.ndarray] = {}
    for name, (path, audio) in decoded.items():
        short = longest - audio.shape[0]
        if short > max_pad:
            raise TrackError(
                path,
                f"{audio.shape[0] / sample_rate:.3f} s, {short / sample_rate:.3f} s shorter than the "
                f"longest file of the track (more than the {max_pad_seconds:g} s that may be padded)",
                track.native_id,
            )
        if short > 0:
            audio = np.pad(audio, ((0, short), (0, 0)))
            label = "mixture" if name == MIXTURE else f"stem {name}"
            warnings.append(f"{label}: tail of {short} samples zero-padded ({Path(path).name})")
        out[name] = audio
    mixture = out.pop(MIXTURE, None)
    return TrackAudio(sample_rate=sample_rate, stems=out, mixture=mixture, warnings=warnings)
