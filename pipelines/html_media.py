"""Shared pieces of the static HTML reports (``iass corpus report``, ``iass report html``).

Audio excerpts encoded as MP3 with the ffmpeg binary that imageio-ffmpeg ships, spectrogram
images, the choice of an excerpt (the window where the activity labels change most), and the
page's skeleton: one self-contained HTML file with inline CSS and its assets beside it, no
script, font or style from the network, so the page opens from ``file://`` anywhere.
"""
from __future__ import annotations

import functools
import html
import logging
import re
import subprocess
from pathlib import Path

import numpy as np

from iass.errors import AudioError

log = logging.getLogger(__name__)

EXCERPT_SECONDS = 10.0
MP3_BITRATE = "128k"          # 10 s stereo: ~160 kB; see the size estimate in the docs
SPEC_N_FFT = 2048
SPEC_HOP = 512
SPEC_ROWS = 128               # log-frequency rows of a spectrogram image
SPEC_FMIN, SPEC_FMAX = 40.0, 16000.0
SPEC_RANGE_DB = 80.0
SPEC_CMAP = "magma"


# ------------------------------------------------------------------------------------ audio
@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """imageio-ffmpeg's ffmpeg, checked to have the MP3 encoder (libmp3lame)."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    if "libmp3lame" not in out:
        raise AudioError(f"{exe}: this ffmpeg has no MP3 encoder (libmp3lame)")
    return exe


MP3_ARGS = ("-c:a", "libmp3lame", "-b:a", MP3_BITRATE, "-compression_level", "7")  # lame -q 7: fast


def encode_mp3(audio: np.ndarray, sample_rate: int, path: str | Path) -> Path:
    """Write ``audio`` ((n,) or (n, channels) float, full scale 1.0) as an MP3 at ``sample_rate``."""
    return encode_mp3_many([(audio, path)], sample_rate)[0]


def encode_mp3_many(items: list[tuple[np.ndarray, str | Path]], sample_rate: int) -> list[Path]:
    """Several clips ``(audio, path)`` as MP3s in one ffmpeg process (a track's excerpts: one
    process start instead of dozens). Raises AudioError when ffmpeg fails."""
    import tempfile

    from iass.io import write_wav

    paths = [Path(p) for _, p in items]
    if not items:
        return paths
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    with tempfile.TemporaryDirectory(prefix="iass-mp3-", dir=paths[0].parent) as tmp:
        for i, (audio, _) in enumerate(items):
            a = np.asarray(audio, dtype=np.float32)
            a = a[:, None] if a.ndim == 1 else a
            write_wav(Path(tmp) / f"{i}.wav", np.clip(a, -1.0, 1.0), int(sample_rate))
            cmd += ["-i", str(Path(tmp) / f"{i}.wav")]
        outs = [Path(tmp) / f"{i}.mp3" for i in range(len(items))]
        for i, out in enumerate(outs):
            cmd += ["-map", f"{i}:a", *MP3_ARGS, "-ar", str(int(sample_rate)), str(out)]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0:
            raise AudioError(f"{paths[0].parent}: ffmpeg could not encode MP3: "
                             f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        for out, path in zip(outs, paths):
            out.replace(path)
    return paths


def pick_excerpt(labels: np.ndarray, hop: int, n_samples: int, sample_rate: int,
                 seconds: float = EXCERPT_SECONDS) -> tuple[int, int]:
    """(start, length) in samples of the ``seconds`` window where the activity labels
    ((K, T), NaN unknown) change most often; the whole track when it is shorter. Ties: the
    earliest window."""
    length = min(int(n_samples), int(round(seconds * sample_rate)))
    if length >= n_samples or labels is None or np.size(labels) == 0:
        return 0, length
    lab = np.nan_to_num(np.atleast_2d(np.asarray(labels, dtype=np.float64)), nan=0.0)
    changes = np.abs(np.diff(lab, axis=1)).sum(0)                      # (T - 1,)
    win = max(1, int(length // hop))
    if changes.size <= win:
        return 0, length
    csum = np.concatenate([[0.0], np.cumsum(changes)])
    counts = csum[win:] - csum[:-win]
    first = int(np.argmax(counts))
    start = min(first * hop, n_samples - length)
    return max(0, start), length


# ------------------------------------------------------------------------------ spectrogram
def _power_stft(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, power) of the mono mix-down's STFT, padded to one frame at least."""
    from scipy.signal import stft

    a = np.asarray(audio, dtype=np.float32)
    mono = a.mean(axis=1) if a.ndim == 2 else a
    if mono.size < SPEC_N_FFT:
        mono = np.pad(mono, (0, SPEC_N_FFT - mono.size))
    freqs, _, z = stft(mono, fs=sample_rate, nperseg=SPEC_N_FFT, noverlap=SPEC_N_FFT - SPEC_HOP,
                       boundary=None, padded=True)
    return freqs, (np.abs(z) ** 2).astype(np.float64)


def spectrogram_db(audio: np.ndarray, sample_rate: int, ref_power: float | None = None) -> np.ndarray:
    """(SPEC_ROWS, frames) log-frequency power spectrogram in dB relative to ``ref_power``
    (default: this signal's peak), clipped to [-SPEC_RANGE_DB, 0]; row 0 = lowest frequency."""
    freqs, power = _power_stft(audio, sample_rate)
    rows = np.geomspace(SPEC_FMIN, min(SPEC_FMAX, sample_rate / 2), SPEC_ROWS)
    idx = np.clip(np.searchsorted(freqs, rows), 1, len(freqs) - 1)
    # each row: the max over the bins between its neighbours (no gaps at high frequencies)
    edges = np.concatenate([[idx[0]], (idx[:-1] + idx[1:]) // 2, [idx[-1] + 1]])
    logmax = np.maximum.reduceat(power, edges[:-1], axis=0)[: SPEC_ROWS]
    ref = float(ref_power) if ref_power else float(power.max() or 1.0)
    db = 10 * np.log10(np.maximum(logmax, 1e-20) / max(ref, 1e-20))
    return np.clip(db, -SPEC_RANGE_DB, 0.0).astype(np.float32)


def peak_power(audio: np.ndarray, sample_rate: int) -> float:
    """The largest STFT bin power of ``audio``: the common reference of a track's spectrograms."""
    return float(_power_stft(audio, sample_rate)[1].max() or 1.0)


def save_spectrogram(audio: np.ndarray, sample_rate: int, path: str | Path,
                     ref_power: float | None = None) -> Path:
    """A spectrogram as a bare image (no axes: it sits above its player), JPEG or PNG by suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = spectrogram_db(audio, sample_rate, ref_power)
    kwargs = {"pil_kwargs": {"quality": 80}} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    plt.imsave(path, db, cmap=SPEC_CMAP, vmin=-SPEC_RANGE_DB, vmax=0.0, origin="lower", **kwargs)
    return path


# ------------------------------------------------------------------------------------- page
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1400px; padding: 0 1.2em 3em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin: 0.8em 0 0.2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
p.note, .muted { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.55em; text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; }
td.wrap { white-space: normal; min-width: 20em; }
thead th { background: #f3f3f3; }
td.best { font-weight: bold; background: #eef7ee; }
.tablewrap { overflow-x: auto; }
.figs img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.3em 0.6em 0.3em 0; }
.players { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 0.7em; }
.player { border: 1px solid #ddd; border-radius: 6px; padding: 0.4em; background: #fafafa; min-width: 0; }
.player .label { font-size: 0.85em; font-weight: 600; margin-bottom: 0.25em; overflow: hidden;
                 text-overflow: ellipsis; white-space: nowrap; }
.player img { display: block; width: 100%; height: 72px; object-fit: fill; border-radius: 3px; }
.player img.labelled { height: auto; }
.player audio { display: block; width: 100%; height: 36px; margin-top: 0.3em; }
.target { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr); gap: 1em;
          align-items: start; border-top: 1px dashed #ddd; padding-top: 0.5em; margin-top: 0.8em; }
.target .players { grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); }
.target .activity img { width: 100%; height: auto; }
@media (max-width: 900px) { .target { grid-template-columns: minmax(0, 1fr); } }
details { margin: 0.5em 0 1em; }
details pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.track { margin-bottom: 2em; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: list[str]) -> str:
    """A whole HTML document: inline CSS, no script, nothing from the network."""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        *body, "</body>", "</html>", ""])


def player(label: str, audio_href: str, image_href: str | None, image_class: str = "",
           title: str | None = None) -> str:
    """A card: the label, the spectrogram image above and the audio player below it; ``title``
    (default: the label) is its tooltip and the image's alt text."""
    title = title or label
    img = ""
    if image_href:
        cls = f' class="{esc(image_class)}"' if image_class else ""
        img = f'<img src="{esc(image_href)}" alt="spectrogram: {esc(title)}"{cls}>'
    return (f'<div class="player"><div class="label" title="{esc(title)}">{esc(label)}</div>{img}'
            f'<audio controls preload="metadata" src="{esc(audio_href)}" title="{esc(title)}">'
            "</audio></div>")


def table(header: list[str], rows: list[list], best: list[set[int]] | None = None) -> str:
    """An HTML table; ``best[r]`` = the column indices of row r to highlight."""
    numeric = [bool(rows) and all(_is_number(row[c]) for row in rows) for c in range(len(header))]
    out = ['<div class="tablewrap"><table><thead><tr>',
           "".join(("<th class=\"num\">" if numeric[c] else "<th>") + f"{esc(h)}</th>"
                   for c, h in enumerate(header)), "</tr></thead><tbody>"]
    for r, row in enumerate(rows):
        cells = []
        for c, v in enumerate(row):
            classes = (["best"] if best and c in best[r] else []) + (["num"] if numeric[c] else [])
            if not numeric[c] and len(str(v)) > 60:
                classes.append("wrap")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{esc(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _is_number(value) -> bool:
    if isinstance(value, (int, float, np.number)):
        return True
    return bool(re.fullmatch(r"[-+]?(\d+(\.\d*)?|inf)|–", str(value)))


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if np.isnan(v):
        return "–"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def dir_size(path: str | Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
