"""Writers that put a rendered song on disk in the real layout of a corpus.

Each writer produces exactly what the corpus' own release looks like, so the real adapters
(``pipelines/sources/``) ingest synthesized songs unchanged:

``medleydb``
    ``<out>/<Id>/<Id>_METADATA.yaml`` (MedleyDB's 16 keys, 'yes'/'no' strings, stems S01.. with
    filename/instrument/component/raw, plus ``iass_render``: soundfont file, sha256 and GM
    program of the stem, a key MedleyDB's own tools never read), ``<Id>_MIX.wav``,
    ``<Id>_STEMS/<Id>_STEM_NN.wav`` and
    ``<Id>_ACTIVATION_CONF.lab`` (``time,S01,...``, hop 2048 at 44.1 kHz, from the exact note
    times: 1.0 where a note sounds in the frame's cell, else 0.0) and the exact notes of each stem,
    ``<Id>_NOTES/<stem file name>.csv`` (``onset,offset,pitch,velocity``: :func:`notes_csv`). Ids ``Synth_<Title>``,
    artist 'iass synth'. Raw entries are metadata only: the RAW audio would be a copy of the
    stem and no reader uses it, so ``<Id>_RAW/`` is not written.
``mixing_secrets``
    The same format with ``origin: Mixing Secrets`` and that library's naming: single stems
    named like the multitrack's files (``01_LeadVox.wav``, ``03_ElecGtr.wav``), the drum kit
    and the synth pre-summed into ``<Id>_STEM_drums.wav`` / ``<Id>_STEM_synth.wav`` with raw
    entries named after the kit pieces ('Kick', 'Snare', 'HiHat', 'Tom', 'Overheads').
``musdb-hq``
    ``<out>/{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav``; everything
    that is not vocals, drums or bass is summed into ``other``. Sidecars in the track folder:
    ``iass_render.json`` (per MUSDB stem, the parts summed into it with their soundfont (file,
    sha256) and GM program) and ``notes.csv`` (``stem,onset,offset,pitch,velocity``; ``other``
    holds every other part's notes); MUSDB readers open only the five WAVs.
``musdb-stems``
    ``<out>/{train,test}/<Artist - Title>.stem.mp4``, AAC streams 0 mixture, 1 drums, 2 bass,
    3 other, 4 vocals, encoded by the ffmpeg binary of imageio-ffmpeg with bit-exact flags and
    one thread (the same bytes on every run). AAC is lossy: this is the one layout in which the
    mixture is not exactly the sum of the stems. Sidecars beside the ``.stem.mp4``:
    ``<Artist - Title>.iass_render.json`` (as in ``musdb-hq``) and ``<Artist - Title>.notes.csv``.
``native``
    ``<out>/<track_id>/mixture.wav``, ``stems/<canonical instrument>.wav`` (32-bit float),
    ``notes.parquet`` (instrument, program, is_drum, pitch, velocity, onset_s, offset_s: the exact
    note times), ``track.json`` (artist, title, seed, tempo, key, sections, instruments, mixing,
    and per instrument its soundfont: file name and sha256) and ``song.mid``. Nothing is lost to a foreign format; read by the ``synth`` source.

The musdb layouts split songs into train/test by a draw from the song's seed (``TEST_FRACTION``),
so a song's split does not depend on how many songs are written.

Audio: every stem is on the 24-bit grid and the mixture is their integer sum (see
:mod:`render`), so in the WAV layouts (24-bit PCM; float in ``native``) the mixture equals the
sum of the stems exactly. WAV files are written by :func:`iass.io.write_wav` (a plain RIFF writer):
libsndfile stamps float WAVs with the current time in a PEAK chunk, which would make two runs
differ in bytes.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from iass.errors import AudioError, ConfigError
from iass.io import atomic_path, atomic_write_json, atomic_write_parquet, atomic_write_text
from iass.io import wav_bytes as io_wav_bytes
from iass.io import write_wav as io_write_wav
from iass.pipelines.sources.render_info import RENDER_KEY  # the key the adapters read back
from iass.pipelines.synth.song import Song
from iass.pipelines.synth.render import SAMPLE_RATE, part_fonts, to_float

LAYOUTS = ("medleydb", "mixing_secrets", "musdb-hq", "musdb-stems", "native")
TEST_FRACTION = 0.2
ACTIVATION_HOP = 2048          # MedleyDB's activation-confidence hop (window 4096)
ARTIST = "iass synth"

#: canonical instrument (+ variant) -> the corpus' own label
MEDLEYDB_LABELS = {
    ("lead_vocals", "male"): "male singer",
    ("lead_vocals", "female"): "female singer",
    ("drums", ""): "drum set",
    ("electric_bass", ""): "electric bass",
    ("electric_guitar", "clean"): "clean electric guitar",
    ("electric_guitar", "distorted"): "distorted electric guitar",
    ("acoustic_guitar", ""): "acoustic guitar",
    ("piano", ""): "piano",
    ("bowed_strings", ""): "string section",
    ("organ", ""): "electronic organ",
    ("synth", ""): "synthesizer",
    ("brass", ""): "brass section",
}
# Mixing Secrets spells brass 'brass' (its metadata has no 'brass section')
MIXING_SECRETS_LABELS = {**MEDLEYDB_LABELS, ("brass", ""): "brass"}
#: Mixing Secrets file names of single stems ('NN_<Name>.wav'), as its multitracks name them
MIXING_SECRETS_FILES = {
    "lead_vocals": "LeadVox", "electric_bass": "Bass", "electric_guitar": "ElecGtr",
    "acoustic_guitar": "AcousticGtr", "piano": "Piano", "bowed_strings": "Strings",
    "organ": "Organ", "brass": "Brass",
}
MEDLEYDB_COMPONENT = {"lead_vocals": "melody", "electric_bass": "bass"}
GENRES = {"major": "Singer/Songwriter", "minor": "Rock"}
MUSDB_STEMS = ("drums", "bass", "other", "vocals")      # stream order 1..4 after the mixture
MUSDB_OF = {"lead_vocals": "vocals", "drums": "drums", "electric_bass": "bass"}


# ----------------------------------------------------------------------------- names and ids
def camel(text: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in text.replace("-", " ").split() if w.isalnum())


def medleydb_id(song: Song) -> str:
    """``Synth_<TitleInCamelCase>``, e.g. 'Synth_AmberHarbour1n007' (one underscore, like MedleyDB)."""
    words = song.title.rsplit(" ", 1)[0]
    return f"Synth_{camel(words)}{song.seed}n{song.index:03d}"


def musdb_name(song: Song) -> str:
    return f"{song.artist} - {song.title}"


def native_id(song: Song) -> str:
    return f"synth_{song.seed}_{song.index:04d}"


def musdb_split(song: Song) -> str:
    """train/test from the song's own seed: independent of how many songs are written."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([song.seed, song.index, 1000])))
    return "test" if rng.random() < TEST_FRACTION else "train"


def song_label(song: Song, instrument: str, table: dict) -> str:
    return table[(instrument, song.part(instrument).variant)]


def render_record(song: Song, instrument: str, fonts: dict) -> dict:
    """How one part was rendered: soundfont (file name, sha256) and GM bank/program."""
    part, sf = song.part(instrument), fonts[instrument]
    return {"instrument": instrument, "soundfont": sf.file, "soundfont_sha256": sf.sha256,
            "bank": 128 if part.is_drum else 0, "program": int(part.program),
            "is_drum": bool(part.is_drum)}


# -------------------------------------------------------------------------------------- WAV
def wav_bytes(pcm: np.ndarray, subtype: str) -> bytes:
    """A WAV file of 24-bit-grid integers (frames, channels): 'PCM_24' or 'FLOAT' (pcm / 2**23)."""
    return io_wav_bytes(to_float(pcm) if subtype == "FLOAT" else pcm, SAMPLE_RATE, subtype)


def write_wav(path: Path, pcm: np.ndarray, subtype: str) -> None:
    io_write_wav(path, to_float(pcm) if subtype == "FLOAT" else pcm, SAMPLE_RATE, subtype)


# -------------------------------------------------------------------------- labels on disk
def notes_table(song: Song):
    """Exact note times of every part: one row per note (pyarrow Table)."""
    import pyarrow as pa

    rows = {k: [] for k in ("instrument", "program", "is_drum", "pitch", "velocity", "onset_s",
                            "offset_s")}
    for part in song.parts:
        for n in part.notes:
            rows["instrument"].append(part.instrument)
            rows["program"].append(part.program)
            rows["is_drum"].append(part.is_drum)
            rows["pitch"].append(n.pitch)
            rows["velocity"].append(n.velocity)
            rows["onset_s"].append(n.onset)
            rows["offset_s"].append(n.offset)
    schema = pa.schema([("instrument", pa.string()), ("program", pa.int16()),
                        ("is_drum", pa.bool_()), ("pitch", pa.int16()), ("velocity", pa.int16()),
                        ("onset_s", pa.float64()), ("offset_s", pa.float64())])
    return pa.table(rows, schema=schema)


def note_frames(intervals, n_frames: int, hop: int) -> np.ndarray:
    """Frame t active when a note overlaps the cell [t*hop - hop/2, t*hop + hop/2) (samples)."""
    from iass.pipelines.activity import intervals_to_frames

    return intervals_to_frames(intervals, n_frames, hop, SAMPLE_RATE)


def activation_lab_text(song: Song, stem_parts: list[list[str]], n_samples: int) -> str:
    """MedleyDB ``_ACTIVATION_CONF.lab`` text: ``time,S01,...``, one row per hop of 2048."""
    n_frames = n_samples // ACTIVATION_HOP + 1
    cols = []
    for instruments in stem_parts:
        intervals = [iv for inst in instruments for iv in song.part(inst).intervals()]
        cols.append(note_frames(intervals, n_frames, ACTIVATION_HOP))
    header = "time," + ",".join(f"S{i + 1:02d}" for i in range(len(stem_parts)))
    lines = [header]
    for t in range(n_frames):
        vals = ",".join("1.0000" if c[t] else "0.0000" for c in cols)
        lines.append(f"{t * ACTIVATION_HOP / SAMPLE_RATE:.4f},{vals}")
    return "\n".join(lines) + "\n"


def notes_csv(song: Song, instruments_of: dict[str | None, list[str]]) -> str:
    """Exact notes as CSV ``onset,offset,pitch,velocity`` (times in seconds, written with repr:
    they read back to the same floats); ``instruments_of``: {stem: its instruments}, the key
    ``None`` for a per-stem file (no ``stem`` column)."""
    lines = ["onset,offset,pitch,velocity" if None in instruments_of else "stem,onset,offset,pitch,velocity"]
    for stem, insts in instruments_of.items():
        notes = sorted((n.onset, n.offset, n.pitch, n.velocity) for i in insts for n in song.part(i).notes)
        lead = "" if stem is None else f"{stem},"
        lines += [f"{lead}{on!r},{off!r},{p},{v}" for on, off, p, v in notes]
    return "\n".join(lines) + "\n"


def _yaml(doc: dict) -> str:
    import yaml

    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=True, allow_unicode=True)


# ----------------------------------------------------------------------------------- writers
def write_medleydb(song: Song, stems: dict, mixture: np.ndarray, out: Path,
                   mixing_secrets: bool = False, fonts: dict | None = None) -> dict:
    track_id = medleydb_id(song)
    track_dir = out / track_id
    fonts = fonts or part_fonts(song)
    stem_dir = f"{track_id}_STEMS"
    labels = MIXING_SECRETS_LABELS if mixing_secrets else MEDLEYDB_LABELS
    # (stem files, their instruments): Mixing Secrets pre-sums the drum kit and the synths
    groups: list[tuple[str, list[str], str, dict]] = []
    order = [p.instrument for p in song.parts if p.instrument in stems]
    for k, inst in enumerate(order, start=1):
        label = song_label(song, inst, labels)
        if mixing_secrets:
            if inst in ("drums", "synth"):
                group = "drums" if inst == "drums" else "synth"
                filename = f"{track_id}_STEM_{group}.wav"
                raws = ({"R01": {"filename": "01_Kick.wav", "instrument": "Kick"},
                         "R02": {"filename": "02_Snare.wav", "instrument": "Snare"},
                         "R03": {"filename": "03_HiHat.wav", "instrument": "HiHat"},
                         "R04": {"filename": "04_Tom.wav", "instrument": "Tom"},
                         "R05": {"filename": "05_Overheads.wav", "instrument": "Overheads"}}
                        if inst == "drums" else
                        {"R01": {"filename": f"{k + 10:02d}_Synth.wav", "instrument": "Synth"}})
            else:
                filename = f"{k + 10:02d}_{MIXING_SECRETS_FILES[inst]}.wav"
                raws = {"R01": {"filename": filename, "instrument": label}}
            component = ""
        else:
            filename = f"{track_id}_STEM_{k:02d}.wav"
            raws = {"R01": {"filename": f"{track_id}_RAW_{k:02d}_01.wav", "instrument": label}}
            component = MEDLEYDB_COMPONENT.get(inst, "")
        groups.append((filename, [inst], label, {"component": component, "raw": raws}))

    meta = {
        "album": "",
        "artist": ARTIST,
        "composer": "" if mixing_secrets else [ARTIST],
        "excerpt": "no",
        "genre": "" if mixing_secrets else GENRES[song.mode],
        "has_bleed": "no",
        "instrumental": "no" if "lead_vocals" in stems else "yes",
        "mix_filename": f"{track_id}_MIX.wav",
        "origin": "Mixing Secrets" if mixing_secrets else ARTIST,
        "producer": "" if mixing_secrets else [ARTIST],
        "raw_dir": f"{track_id}_RAW",
        "stem_dir": stem_dir,
        "stems": {},
        "title": song.title,
        "version": "3.0" if mixing_secrets else 1.2,
        "website": [],
    }
    for k, (filename, insts, label, extra) in enumerate(groups, start=1):
        meta["stems"][f"S{k:02d}"] = {"component": extra["component"], "filename": filename,
                                     "instrument": label, "raw": extra["raw"],
                                     RENDER_KEY: render_record(song, insts[0], fonts)}
        write_wav(track_dir / stem_dir / filename, stems[insts[0]], "PCM_24")
        atomic_write_text(track_dir / f"{track_id}_NOTES" / f"{Path(filename).stem}.csv",
                          notes_csv(song, {None: insts}))
    write_wav(track_dir / f"{track_id}_MIX.wav", mixture, "PCM_24")
    atomic_write_text(track_dir / f"{track_id}_ACTIVATION_CONF.lab",
                      activation_lab_text(song, [g[1] for g in groups], len(mixture)))
    atomic_write_text(track_dir / f"{track_id}_METADATA.yaml", _yaml(meta))
    return {"native_id": track_id, "split": None}


def musdb_stems(song: Song, stems: dict) -> dict[str, np.ndarray]:
    """The four MUSDB stems (24-bit grid integers); 'other' is everything else summed."""
    n = next(iter(stems.values())).shape
    out = {name: np.zeros(n, dtype=np.int64) for name in MUSDB_STEMS}
    for inst, pcm in stems.items():
        out[MUSDB_OF.get(inst, "other")] += pcm
    return {k: v.astype(np.int32) for k, v in out.items()}


def musdb_render_sidecar(song: Song, stems: dict, fonts: dict | None) -> dict:
    """The sidecar of a MUSDB-layout song: per MUSDB stem, the parts summed into it."""
    fonts = fonts or part_fonts(song)
    out = {name: [] for name in MUSDB_STEMS}
    for p in song.parts:
        if p.instrument in stems:
            out[MUSDB_OF.get(p.instrument, "other")].append(render_record(song, p.instrument, fonts))
    return {"generator": ARTIST, "stems": out}


def musdb_notes_of(stems: dict) -> dict[str, list[str]]:
    """MUSDB stem -> the instruments summed into it (as :func:`musdb_stems`)."""
    out: dict[str, list[str]] = {name: [] for name in MUSDB_STEMS}
    for inst in stems:
        out[MUSDB_OF.get(inst, "other")].append(inst)
    return out


def write_musdb_hq(song: Song, stems: dict, mixture: np.ndarray, out: Path,
                   fonts: dict | None = None) -> dict:
    split = musdb_split(song)
    track_dir = out / split / musdb_name(song)
    atomic_write_json(track_dir / f"{RENDER_KEY}.json", musdb_render_sidecar(song, stems, fonts))
    for name, pcm in musdb_stems(song, stems).items():
        write_wav(track_dir / f"{name}.wav", pcm, "PCM_24")
    write_wav(track_dir / "mixture.wav", mixture, "PCM_24")
    atomic_write_text(track_dir / "notes.csv", notes_csv(song, musdb_notes_of(stems)))
    return {"native_id": musdb_name(song), "split": split}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_musdb_stems(song: Song, stems: dict, mixture: np.ndarray, out: Path,
                      fonts: dict | None = None, bitrate: str = "256k") -> dict:
    split = musdb_split(song)
    path = out / split / f"{musdb_name(song)}.stem.mp4"
    atomic_write_json(path.with_name(f"{musdb_name(song)}.{RENDER_KEY}.json"),
                      musdb_render_sidecar(song, stems, fonts))
    parts = {"mixture": mixture, **musdb_stems(song, stems)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iass-synth-", dir=path.parent) as tmp:
        inputs = []
        for name in ("mixture",) + MUSDB_STEMS:
            wav = Path(tmp) / f"{name}.wav"
            wav.write_bytes(wav_bytes(parts[name], "PCM_24"))
            inputs += ["-i", str(wav)]
        maps = []
        for i in range(5):
            maps += ["-map", f"{i}:a"]
        with atomic_path(path) as target:
            cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                   "-threads", "1", *inputs, *maps, "-c:a", "aac", "-b:a", bitrate,
                   "-ar", str(SAMPLE_RATE), "-ac", "2", "-map_metadata", "-1",
                   "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "mp4", str(target)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                err = proc.stderr.strip().splitlines()
                raise AudioError(f"{path}: ffmpeg failed ({err[-1] if err else proc.returncode})")
    atomic_write_text(path.with_name(f"{musdb_name(song)}.notes.csv"),
                      notes_csv(song, musdb_notes_of(stems)))
    return {"native_id": musdb_name(song), "split": split}


def track_info(song: Song, fonts: dict | None = None) -> dict:
    fonts = fonts or part_fonts(song)
    used = {}
    for p in song.parts:
        used.setdefault(fonts[p.instrument].sha256, fonts[p.instrument])
    return {
        "artist": song.artist,
        "title": song.title,
        "seed": song.seed,
        "index": song.index,
        "tempo": song.tempo,
        "key": song.key,
        "mode": song.mode,
        "time_signature": "4/4",
        "duration_s": song.duration,
        "sample_rate": SAMPLE_RATE,
        "sections": song.sections,
        "instruments": [
            {"instrument": p.instrument, "program": p.program, "is_drum": p.is_drum,
             "variant": p.variant, "level_db": p.level_db, "pan": p.pan,
             "medleydb_label": MEDLEYDB_LABELS[(p.instrument, p.variant)],
             "active_fraction": round(p.active_fraction(song.duration), 4),
             "soundfont": fonts[p.instrument].file,
             "soundfont_sha256": fonts[p.instrument].sha256}
            for p in song.parts
        ],
        "soundfonts": [{"file": sf.file, "sha256": sf.sha256} for sf in used.values()],
    }


def write_native(song: Song, stems: dict, mixture: np.ndarray, out: Path,
                 fonts: dict | None = None) -> dict:
    track_dir = out / native_id(song)
    for inst, pcm in stems.items():
        write_wav(track_dir / "stems" / f"{inst}.wav", pcm, "FLOAT")
    write_wav(track_dir / "mixture.wav", mixture, "FLOAT")
    keep = [p for p in song.parts if p.instrument in stems]
    song_kept = Song(**{**song.__dict__, "parts": keep})
    atomic_write_parquet(track_dir / "notes.parquet", notes_table(song_kept))
    with atomic_path(track_dir / "song.mid") as tmp:
        song_kept.to_pretty_midi().write(str(tmp))
    atomic_write_json(track_dir / "track.json", track_info(song_kept, fonts))
    return {"native_id": native_id(song), "split": None}


WRITERS = {
    "medleydb": write_medleydb,
    "mixing_secrets": lambda s, st, m, o, fonts=None: write_medleydb(s, st, m, o, True, fonts),
    "musdb-hq": write_musdb_hq,
    "musdb-stems": write_musdb_stems,
    "native": write_native,
}


def write_song(layout: str, song: Song, stems: dict, mixture: np.ndarray, out: Path,
               fonts: dict | None = None) -> dict:
    """``fonts``: instrument -> the soundfont it was rendered with (recorded in the metadata;
    default: TimGM6mb for every part, what :func:`render.render_song` uses without a pool)."""
    if layout not in WRITERS:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return WRITERS[layout](song, stems, mixture, Path(out), fonts=fonts)
