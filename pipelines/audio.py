"""Audio reading and validation: the one reader of the corpus build and of ``iass separate``.

Any format ffmpeg decodes is read: WAV (8/16/24/32-bit int, float), FLAC, AIFF, MP3 and OGG
through libsndfile (soundfile), and MP4 / M4A (AAC) containers, a MUSDB18 ``.stem.mp4``'s
streams (stream 0 is the mixture) and every other format libsndfile does not know through the
ffmpeg binary that the imageio-ffmpeg wheel ships, so decoding works after ``make setup`` alone
(no system ffmpeg/ffprobe). :func:`read_audio` decodes a whole file, :func:`open_audio` gives
sample-exact random access in bounded memory (``iass separate``'s input).

Every track is brought to one shape: float32 ``(frames, 2)`` at the requested rate. What had to
be changed to get there is recorded, never hidden: a resampled file, a mono stem duplicated to
stereo, a short tail zero-padded. What cannot be repaired is a :class:`TrackError` naming the
file (an :class:`AudioFileError`, also an ``iass.errors.AudioError``, for the file's own
problems): missing, empty or undecodable audio, NaN/inf samples, more than two channels, stems
of one track at different rates, lengths that differ by more than ``max_pad_seconds``, and any
file name that escapes the track folder (``../``, absolute paths, symlinks out of the source root).
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from iass.errors import AudioError
from iass.pipelines.sources.base import SourceTrack, TrackAudio, TrackError

#: lengths within this many seconds are zero-padded to the longest (recorded); more is an error
DEFAULT_MAX_PAD_SECONDS = 1.0
#: containers always decoded by ffmpeg, one audio stream by index (a MUSDB .stem.mp4: 0 = mixture)
MP4_SUFFIXES = (".mp4", ".m4a")
#: libsndfile formats with sample-exact seeks; compressed ones are decoded once for random access
EXACT_SEEK_FORMATS = ("WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64")
BLOCK = 1 << 16
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


# ---------------------------------------------------------------- files and errors


class AudioFileError(TrackError, AudioError):
    """An audio file that cannot be read (missing, not a file, empty, undecodable, too many
    channels, NaN/inf); one line naming the file. A :class:`TrackError` for the corpus build and
    an :class:`iass.errors.AudioError` for every other caller (``iass separate``)."""


def check_file(path: str | Path) -> Path:
    """``path`` if it is a non-empty regular file, else :class:`AudioFileError`."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise AudioFileError(path, "missing file") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioFileError(path, "not a regular file")
    if st.st_size == 0:
        raise AudioFileError(path, "unreadable audio (empty file, 0 bytes)")
    return path


def _by_ffmpeg(path: Path, stream: int | None) -> bool:
    """MP4 containers (and any file read by stream index) go to ffmpeg; the rest to libsndfile
    first, ffmpeg when libsndfile does not know the format."""
    return stream is not None or path.suffix.lower() in MP4_SUFFIXES


def _oneline(text, limit: int = 160) -> str:
    return " ".join(str(text).split())[:limit]


# ---------------------------------------------------------------- headers


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int               # for streams read by ffmpeg: from the container duration (approximate)

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


def probe_streams(path: str | Path) -> list[AudioInfo]:
    """The audio streams of any file ffmpeg reads (the 5 of a MUSDB ``.stem.mp4``, 1 of an M4A),
    in order, from ffmpeg's stream listing (no ffprobe needed)."""
    path = check_file(path)
    found = _probe(path)
    if isinstance(found, str):
        raise AudioFileError(path, f"unreadable audio (ffmpeg: {found})")
    return list(found)


def _probe(path: Path) -> tuple[AudioInfo, ...] | str:
    st = path.stat()
    return _probe_cached(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _probe_cached(path_str: str, _mtime_ns: int, _size: int) -> tuple[AudioInfo, ...] | str:
    """The streams, or why ffmpeg cannot read the file. One .stem.mp4 holds five streams: probe
    it once, not once per stem."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path_str],
                          capture_output=True, text=True, errors="replace")
    err = proc.stderr
    if "Invalid data found" in err or "moov atom not found" in err or "No such file" in err:
        return "invalid data"
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
    return tuple(streams) or "no audio stream"


def _stream_info(path: Path, stream: int) -> AudioInfo:
    streams = probe_streams(path)
    if stream >= len(streams):
        raise AudioFileError(path, f"has {len(streams)} audio streams; stream {stream} is missing")
    return streams[stream]


def _ffmpeg_fallback(path: Path, libsndfile_error: Exception) -> AudioInfo:
    """The first stream of a file libsndfile refused, when ffmpeg reads it (M4A, AAC, Opus...);
    else AudioFileError with both decoders' reasons."""
    found = _probe(path)
    if not isinstance(found, str):
        return found[0]
    reason = _oneline(libsndfile_error).split("': ", 1)[-1]       # drop "Error opening '<path>'"
    raise AudioFileError(path, f"unreadable audio ({reason}; ffmpeg: {found})") from None


def audio_info(path: str | Path, stream: int | None = None) -> AudioInfo:
    """Header-only facts about an audio file (or one stream of a multi-stream file)."""
    import soundfile as sf

    path = check_file(path)
    if _by_ffmpeg(path, stream):
        return _stream_info(path, stream or 0)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for garbage
        return _ffmpeg_fallback(path, exc)
    if info.frames <= 0:
        raise AudioFileError(path, "empty audio file (0 frames)")
    truncated = wav_truncation(path)
    if truncated:
        raise AudioFileError(path, truncated)
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
    """Decode to float32 ``(frames, channels)`` at the file's own rate (whole file in memory):
    libsndfile for what it reads, ffmpeg for MP4 streams and every other format it decodes."""
    import soundfile as sf

    path = check_file(path)
    if not _by_ffmpeg(path, stream):
        try:
            audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
            return audio, int(sr)
        except Exception as exc:
            _ffmpeg_fallback(path, exc)          # raises unless ffmpeg reads it
    return _read_ffmpeg_stream(path, stream or 0)


def _ffmpeg_decode(path: Path, stream: int, channels: int, out: str, fmt: list[str]):
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(path),
           "-map", f"0:a:{stream}", "-vn", "-c:a", "pcm_f32le", "-ac", str(channels), *fmt, out]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = _oneline(proc.stderr.decode(errors="replace"), 200)
        raise AudioFileError(path, f"ffmpeg could not decode stream {stream} ({msg})")
    return proc.stdout


def _read_ffmpeg_stream(path: Path, stream: int) -> tuple[np.ndarray, int]:
    info = _stream_info(path, stream)
    audio = np.frombuffer(_ffmpeg_decode(path, stream, info.channels, "-", ["-f", "f32le"]), dtype="<f4")
    if audio.size == 0 or audio.size % info.channels:
        raise AudioFileError(path, f"stream {stream} decoded to {audio.size} samples (not {info.channels}-channel)")
    return audio.reshape(-1, info.channels).astype(np.float32, copy=True), info.sample_rate


@dataclass
class SeekableAudio:
    """An open audio file with sample-exact seeks: ``file`` is a ``soundfile.SoundFile`` (the
    original, or a temporary float WAV it was decoded to); ``notes``: what was done."""

    file: Any
    notes: list[str]


@contextlib.contextmanager
def open_audio(path: str | Path, stream: int | None = None) -> Iterator[SeekableAudio]:
    """Random access to the audio of ``path`` in bounded memory, whatever its format: WAV / FLAC
    / AIFF are opened as they are; formats libsndfile decodes but seeks imprecisely (MP3, OGG)
    are decoded once to a temporary float WAV; everything else ffmpeg decodes (M4A/AAC, MP4,
    Opus...) too, stream ``stream`` (default 0: the mixture of a MUSDB ``.stem.mp4``). Every
    unreadable input is an :class:`AudioFileError`; temporary files go on exit."""
    import soundfile as sf

    path = check_file(path)
    with tempfile.TemporaryDirectory(prefix="iass-audio-") as tmp:
        plain, notes, src = str(Path(tmp) / "decoded.wav"), [], None
        if not _by_ffmpeg(path, stream):
            try:
                src = sf.SoundFile(str(path))
            except Exception as exc:
                _ffmpeg_fallback(path, exc)      # raises unless ffmpeg reads it
        if src is None:
            info, idx = _stream_info(path, stream or 0), stream or 0
            _ffmpeg_decode(path, idx, info.channels, plain, ["-rf64", "auto", "-f", "wav"])
            n_streams = len(probe_streams(path))
            notes.append(f"decoded with ffmpeg (audio stream {idx} of {n_streams})" if n_streams > 1
                         else "decoded with ffmpeg")
            src = sf.SoundFile(plain)
        elif src.format not in EXACT_SEEK_FORMATS or not src.seekable():
            fmt = src.format
            with src, sf.SoundFile(plain, "w", samplerate=src.samplerate, channels=src.channels,
                                   subtype="FLOAT", format="WAV") as dst:
                for block in src.blocks(BLOCK, dtype="float32", always_2d=True):
                    dst.write(block)
            notes.append(f"decoded {fmt}")
            src = sf.SoundFile(plain)
        with src:
            if src.frames <= 0:
                raise AudioFileError(path, "empty audio (0 frames)")
            yield SeekableAudio(src, notes)


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
    raise AudioFileError(path, f"{ch} channels (only mono or stereo stems are supported)")


def check_finite(audio: np.ndarray, path: str | Path) -> None:
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise AudioFileError(path, f"{bad} NaN/inf samples")


def load_audio_file(path, stream, sample_rate: int, warnings: list[str], label: str) -> np.ndarray:
    """Decode one file to float32 stereo at ``sample_rate``, appending what was changed."""
    audio, sr = read_audio(path, stream)
    if audio.shape[0] == 0:
        raise AudioFileError(path, "empty audio (0 frames)")
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
            raise type(exc)(exc.path, exc.reason, track.native_id) from None
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
