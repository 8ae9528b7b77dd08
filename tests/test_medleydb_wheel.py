"""MedleyDB's own activation annotations from the ``medleydb-instruments`` wheel.

The wheel (in the lock file) ships MedleyDB's official ``_ACTIVATION_CONF.lab`` (hop 2048 at
44.1 kHz) and metadata of the real tracks. A MedleyDB copy is written here from a track's REAL
metadata with generated audio (we have no MedleyDB audio); its labels come from the wheel with
``use_medleydb_lab: true`` and no ``annotations_dir``, through the build's own per-track steps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import source_fixtures as fx
from iass.pipelines import activity as act
from iass.pipelines import build as B
from iass.pipelines.build.cache import CachePaths
from iass.pipelines.build.steps import run_track
from iass.pipelines.corpus_format import make_track_id, num_frames
from iass.pipelines.sources.base import get_adapter
from iass.pipelines.sources.medleydb import packaged_annotations_dir

SR, HOP = 44100, 1024
WHEEL = packaged_annotations_dir()
pytestmark = pytest.mark.skipif(WHEEL is None, reason="medleydb-instruments is not installed (make setup)")


def _lab(native_id: str) -> Path:
    return WHEEL / f"{native_id}_ACTIVATION_CONF.lab"


def _copy(native_id: str, root: Path, seconds: float) -> Path:
    """A MedleyDB tree of one track: its real metadata (from the wheel) and generated audio."""
    meta = WHEEL.parent / "metadata" / f"{native_id}_METADATA.yaml"
    fx.build_from_real_metadata([meta], root, seconds=seconds)
    return root


def _raw_lab(native_id: str) -> tuple[list[str], np.ndarray]:
    """The .lab parsed here with plain string splitting (not through pipelines.activity)."""
    lines = _lab(native_id).read_text().split()
    return lines[0].split(","), np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])


def test_the_wheels_lab_is_on_medleydbs_2048_hop_and_resamples_to_the_model_hop():
    header, data = _raw_lab("MusicDelta_Rock")
    times = data[:, 0]
    assert header[0] == "time" and times[0] == 0.0
    # frame j sits at j * 2048 / 44100 s (the file rounds to 0.1 ms)
    assert np.abs(times - np.arange(len(times)) * 2048 / SR).max() <= 5e-5 + 1e-12
    stems = {"drums": ["S01"], "guitars": ["S03", "S04"], "vocals": ["S05"]}
    cols = {h: data[:, i] for i, h in enumerate(header)}
    n = 2 * len(times) + 3          # three model frames past the last .lab frame
    conf = act.confidence_from_lab(_lab("MusicDelta_Rock"), stems, n, HOP, SR)
    for inst, ids in stems.items():
        want = np.max([cols[s] for s in ids], axis=0)
        got = conf[inst].astype(np.float64)
        assert got.shape == (n,)
        # hop 1024 = half of 2048: even model frames ARE the .lab frames, odd ones their midpoints
        assert np.allclose(got[0:2 * len(want):2], want, atol=1e-6), inst
        assert np.allclose(got[1:2 * len(want) - 1:2], (want[:-1] + want[1:]) / 2, atol=1e-6), inst
        assert np.allclose(got[2 * len(want) - 1:], want[-1], atol=1e-6), inst   # held at the end
        assert (got > 0.5).any() and (got < 0.5).any(), inst   # real entrances and exits


def test_use_medleydb_lab_reads_the_wheel_without_an_annotations_dir(tmp_path):
    nid = "MusicDelta_Rock"
    header, data = _raw_lab(nid)
    seconds = float(data[-1, 0]) + 0.2
    root = _copy(nid, tmp_path / "Audio", seconds)
    adapter = get_adapter("medleydb")
    (ref,) = list(adapter.discover(root))
    track = adapter.read(ref)
    assert track.activation_conf_path == _lab(nid) and adapter.validate(track) == []
    # an annotations_dir is the user's choice: the wheel is not consulted then
    chosen = get_adapter("medleydb", annotations_dir=str(tmp_path / "empty"))
    assert chosen.read(ref).activation_conf_path is None

    params = {"corpus": {"hop": HOP, "num_shards": 1,
                         "labels": {"threshold": 0.5, "use_medleydb_lab": True}}}
    cfg = B.config_from_params(params, sources={"medleydb": str(root)}, out=str(tmp_path / "corpus"),
                               progress=False)
    rec = run_track(ref, cfg)        # the build's read -> harmonize -> label -> write
    assert rec["status"] == "built", rec
    assert rec["track"]["activity_method"] == "medleydb_lab"
    tid = make_track_id("medleydb", nid)
    table = pq.read_table(CachePaths(cfg.out).activity_file(tid)).to_pydict()
    T = num_frames(int(round(seconds * SR)), HOP)
    cols = {h: data[:, i] for i, h in enumerate(header)}
    # MusicDelta_Rock: S01 drum set, S02 electric bass, S03 + S04 clean electric guitar, S05 male singer
    for inst, ids in {"drums": ["S01"], "electric_bass": ["S02"], "electric_guitar": ["S03", "S04"],
                      "lead_vocals": ["S05"]}.items():
        rows = [k for k, name in enumerate(table["instrument"]) if name == inst]
        assert [table["frame"][k] for k in rows] == list(range(T)), inst
        conf = np.array([table["confidence"][k] for k in rows])
        lab = np.max([cols[s] for s in ids], axis=0)
        # the corpus rounds confidence to 4 decimals; even frames are the .lab's own values
        assert np.allclose(conf[0:2 * len(lab):2], lab, atol=1e-4), inst
        assert [table["active"][k] for k in rows] == list(conf >= 0.5), inst


def test_a_wheel_lab_missing_a_stem_falls_back_to_audio_labels(tmp_path):
    """Phoenix_ElzicsFarewell's lab has no column for S04 ('Main System'): the track is built,
    its labels computed from audio, with the reason among its warnings."""
    nid = "Phoenix_ElzicsFarewell"
    root = _copy(nid, tmp_path / "Audio", 1.0)
    adapter = get_adapter("medleydb")
    (ref,) = list(adapter.discover(root))
    track = adapter.read(ref)
    assert track.activation_conf_path == _lab(nid)
    assert adapter.validate(track) == []      # not the user's file: no reason to reject the track
    params = {"corpus": {"hop": HOP, "num_shards": 1, "labels": {"use_medleydb_lab": True}}}
    cfg = B.config_from_params(params, sources={"medleydb": str(root)}, out=str(tmp_path / "corpus"),
                               progress=False)
    rec = run_track(ref, cfg)
    assert rec["status"] == "built" and rec["track"]["activity_method"] == "activation_conf"
    assert any(w.startswith("activation .lab not used") and "S04" in w for w in rec["track"]["warnings"])


def test_mixing_secrets_never_takes_medleydbs_labs(tmp_path):
    """The Mixing Secrets adapter shares MedleyDB's format but not its tracks."""
    nid = "MusicDelta_Rock"
    root = _copy(nid, tmp_path / "Audio", 0.05)
    adapter = get_adapter("mixing_secrets")
    (ref,) = list(adapter.discover(root))
    assert adapter._activation_conf(Path(ref.extra["track_dir"]), nid) is None
