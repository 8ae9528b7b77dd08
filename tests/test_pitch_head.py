"""The multi-pitch head (model.iass.pitch_weight): mir_eval.multipitch scores on hand-checked
rolls, a 2-step training on a corpus of synthesized tones with exact notes, its evaluation
(results.parquet, summary.md, metrics.json against mir_eval on the separator's own output) and
`iass separate`'s MIDI piano rolls read back."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import mir_eval
import numpy as np
import polars as pl
import pretty_midi
import pytest
import torch

from corpus_fixtures import TRAIN_HOP, tiny_train_overrides, write_fixture_corpus
from iass.config import load_params
from iass.errors import ConfigError, RunError
from iass.evaluation.pitch import pitch_scores, roll_to_notes, write_pitch_midi
from iass.pipelines import corpus_format as cf
from iass.training import run as runlib
from iass.training.train import Trainer, train

SR = cf.SAMPLE_RATE
TARGETS = ["vocals", "bass", "piano"]


def _roll(notes, n_frames, hop):
    return cf.notes_to_roll([a for a, _, _ in notes], [b for _, b, _ in notes],
                            [p for _, _, p in notes], n_frames, hop, SR)


def _centre_freqs(notes, times):
    """mir_eval's own input built from the note list, independently of the roll: per frame
    time, the Hz of the notes sounding at it."""
    return [np.array([pretty_midi.note_number_to_hz(p) for a, b, p in notes if a <= t < b])
            for t in times]


def test_multipitch_scores_on_a_hand_checked_note_sequence():
    hop, n = 441, 200                       # 10 ms frames: a 0.3 s note covers 31 frame cells
    melody = [(0.1, 0.4, 60), (0.6, 0.9, 64), (1.1, 1.4, 67)]          # C4 E4 G4
    octave = [(0.1, 0.4, 60), (0.6, 0.9, 76), (1.1, 1.4, 67)]          # E4 sung an octave up
    ref, est = _roll(melody, n, hop), _roll(octave, n, hop)
    assert [int(ref[:, p - 21].sum()) for p in (60, 64, 67)] == [31, 31, 31]

    exact = pitch_scores(ref, ref, hop, SR)
    assert exact["precision"] == exact["recall"] == exact["accuracy"] == exact["f"] == 1.0

    # By hand: 3 notes of N = 31 frames each, one of them an octave off. TP = 2N (C4, G4),
    # reference entries 3N, estimated 3N: precision = recall = 2N / 3N = 2/3, F = 2/3;
    # accuracy = TP / (TP + FP + FN) = 2N / (2N + N + N) = 1/2.
    wrong = pitch_scores(ref, est, hop, SR)
    assert (wrong["tp"], wrong["n_ref"], wrong["n_est"]) == (62, 93, 93)
    assert wrong["precision"] == pytest.approx(2 / 3) and wrong["recall"] == pytest.approx(2 / 3)
    assert wrong["f"] == pytest.approx(2 / 3) and wrong["accuracy"] == pytest.approx(1 / 2)

    # mir_eval itself, on frequencies made from the note list at the frame centres (30 frames
    # a note there: the same ratios), agrees
    times = np.arange(n) * hop / SR
    scores = mir_eval.multipitch.evaluate(times, _centre_freqs(melody, times), times,
                                          _centre_freqs(octave, times))
    assert scores["Precision"] == pytest.approx(2 / 3) and scores["Recall"] == pytest.approx(2 / 3)
    assert scores["Accuracy"] == pytest.approx(1 / 2)
    assert scores["Chroma Precision"] == pytest.approx(1.0)   # the error is an octave, nothing else


def test_predicted_rolls_become_midi_that_reads_back_to_the_same_frames(tmp_path):
    hop, n = 256, 120
    rng = np.random.default_rng(0)
    prob = rng.random((2, n, 88)).astype(np.float32) ** 6      # sparse notes, some 1 frame long
    files = write_pitch_midi(tmp_path, ["piano", "bass"], prob, hop, SR)
    assert [Path(f).name for f in files] == ["piano.mid", "bass.mid"]
    for k, f in enumerate(files):
        notes = pretty_midi.PrettyMIDI(f).instruments[0].notes
        assert len(notes) == len(roll_to_notes(prob[k] >= 0.5)) > 0
        back = cf.notes_to_roll([x.start for x in notes], [x.end for x in notes],
                                [x.pitch for x in notes], n, hop, SR)
        np.testing.assert_array_equal(back, prob[k] >= 0.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pitch_corpus")
    write_fixture_corpus(root, hop=TRAIN_HOP, pitch=True)
    return root


def _params(*extra):
    return load_params(None, tiny_train_overrides(steps_per_epoch=2) + ["train.max_steps=2", *extra])


def test_two_steps_with_the_pitch_head_then_evaluate_and_separate(corpus, tmp_path):
    from iass.cli import main
    from iass.evaluation.evaluate import EvaluateConfig, evaluate
    from iass.evaluation.separate import SeparationConfig, separate_variants
    from iass.training.inference import load_separator

    run = tmp_path / "run"
    metrics = train(corpus, run, "iass", _params("model.iass.pitch_weight=0.5"), targets=TARGETS,
                    device="cpu", quiet=True)
    assert metrics["steps"] == 2 and np.isfinite(metrics["final_valid_pitch"])
    history = list(csv.DictReader((run / runlib.HISTORY_FILE).open()))
    assert float(history[0]["train_pitch"]) > 0 and float(history[0]["valid_pitch"]) > 0
    # the valid loss is the weighted sum of its three terms
    row = {k: float(history[0][k]) for k in ("valid_loss", "valid_mse", "valid_bce", "valid_pitch")}
    assert row["valid_loss"] == pytest.approx(row["valid_mse"] + row["valid_bce"] + 0.5 * row["valid_pitch"])
    info = json.loads((run / runlib.RUN_FILE).read_text())
    assert info["model_config"]["pitch_weight"] == 0.5
    weights = torch.load(run / runlib.LAST, map_location="cpu", weights_only=False)["model"]
    assert tuple(weights["net.pitch.weight"].shape) == (3, info["model_config"]["max_bin"], 88)

    # the pitch weight is part of the run's identity: resuming without it is refused
    with pytest.raises(RunError, match="differ from the run being resumed"):
        Trainer(corpus, run, "iass", _params(), resume=True, quiet=True)

    # evaluation: per-track rows, the pooled table and metrics.json, against mir_eval on the
    # separator's own pitch output and the corpus' rolls
    out = tmp_path / "eval"
    config = EvaluateConfig(workers=1, html=False, separation=SeparationConfig(weighting="hard"))
    summary = evaluate(corpus, [run], out, config, progress=False)
    sep = load_separator(run)
    assert sep.has_pitch
    from iass.pipelines.corpus_format import Corpus

    c = Corpus(corpus)
    (tid,) = c.track_ids(split="test")
    pitch = separate_variants(c.read_mixture(tid), sep, config.separation, ("none",))["none"].pitch
    times = np.arange(pitch.shape[1]) * TRAIN_HOP / SR
    df = pl.read_parquet(out / "results.parquet").filter(pl.col("metric").str.starts_with("pitch_"))
    for k, t in enumerate(TARGETS):
        ref = c.read_pitch(tid, t)
        est = pitch[k] >= 0.5
        freqs = [[mir_eval.util.midi_to_hz(21 + np.flatnonzero(r).astype(float)) for r in roll]
                 for roll in (ref, est)]
        expect = mir_eval.multipitch.evaluate(times, freqs[0], times, freqs[1])
        got = summary["pitch"][t]["run"]        # keyed by the run (its directory), as activity
        assert got["precision"] == pytest.approx(expect["Precision"])
        assert got["recall"] == pytest.approx(expect["Recall"])
        assert got["accuracy"] == pytest.approx(expect["Accuracy"])
        assert got["f"] == pytest.approx(mir_eval.util.f_measure(expect["Precision"], expect["Recall"]))
        rows = dict(df.filter(pl.col("target") == t).select("metric", "value").iter_rows())
        assert rows["pitch_recall"] == pytest.approx(expect["Recall"])   # one test track: pooled = it
    assert json.loads((out / "metrics.json").read_text())["pitch"] == summary["pitch"]
    assert "## Multi-pitch" in (out / "summary.md").read_text()

    # iass separate writes each target's predicted roll as MIDI
    wav = tmp_path / "mix.wav"
    import soundfile as sf

    sf.write(str(wav), c.read_mixture(tid), SR, subtype="FLOAT")
    assert main(["-q", "separate", str(wav), "--run", str(run), "--out", str(tmp_path / "sep")]) == 0
    for k, t in enumerate(TARGETS):
        notes = pretty_midi.PrettyMIDI(str(tmp_path / "sep" / f"{t}.mid")).instruments[0].notes
        back = cf.notes_to_roll([x.start for x in notes], [x.end for x in notes],
                                [x.pitch for x in notes], pitch.shape[1], TRAIN_HOP, SR)
        np.testing.assert_array_equal(back, pitch[k] >= 0.5)


def test_a_pitch_head_needs_pitch_labels_and_a_valid_weight(tmp_path):
    plain = tmp_path / "plain"
    write_fixture_corpus(plain, hop=TRAIN_HOP)          # no notes: pitch unknown everywhere

    def trainer(weight):
        params = load_params(None, tiny_train_overrides() + [f"model.iass.pitch_weight={weight}"])
        return Trainer(plain, tmp_path / "r", "iass", params, _config(params), quiet=True)

    with pytest.raises(ConfigError, match="pitch_weight = 1, but no track of split 'train'"):
        trainer(1)
    with pytest.raises(ConfigError, match="model.iass.pitch_weight: -1.0, expected 0"):
        trainer(-1)


def _config(params):
    from iass.training.config import resolve_train_params

    return resolve_train_params(params, targets=["vocals"])[1]


def test_pitch_weight_zero_is_the_network_of_before():
    """Off (0, the default, or left out): no pitch key in the config (the run identity of before)
    and no pitch parameters; on: the head is drawn after every other parameter, so those are
    initialised exactly as without it."""
    from iass.training.models import ModelSpec
    from iass.training.presets import resolve_iass

    off = resolve_iass({"preset": "tiny"}, SR, TRAIN_HOP)
    assert "pitch_weight" not in off and resolve_iass({"preset": "tiny", "pitch_weight": 0}, SR, TRAIN_HOP) == off
    on = resolve_iass({"preset": "tiny", "pitch_weight": 0.5}, SR, TRAIN_HOP)
    assert on == {**off, "pitch_weight": 0.5}
    torch.manual_seed(3)
    plain = ModelSpec("iass", off, TARGETS).build().state_dict()
    torch.manual_seed(3)
    head = ModelSpec("iass", on, TARGETS).build().state_dict()
    assert set(head) - set(plain) == {"net.pitch.weight", "net.pitch.bias"}
    assert all(torch.equal(plain[k], head[k]) for k in plain)
    mag = torch.rand(2, 2, 257, 9)
    est, logits, pitch_logits = ModelSpec("iass", on, TARGETS).build()(mag)
    assert tuple(pitch_logits.shape) == (2, 3, 9, 88) and tuple(logits.shape) == (2, 3, 9)


def test_the_head_predicts_the_corpus_keys():
    """The pitch head's keys are the corpus' piano-roll keys (kept apart only so that importing
    the model does not load pyarrow)."""
    from iass.pipelines import corpus_format as cf
    from iass.training.iass_model import PITCH_KEYS, PITCH_LOW

    assert (PITCH_LOW, PITCH_KEYS) == (cf.PITCH_MIN, cf.NUM_KEYS)
