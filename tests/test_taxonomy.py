"""The registry: the taxonomy tree, the label maps, and EVERY real label of ../shared/data mapping."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from iass.pipelines import taxonomy as tx
from iass.pipelines.taxonomy import (
    TaxonomyError,
    label_map_hash,
    load_label_map,
    load_taxonomy,
    map_label,
    normalize_label,
    registry_hash,
    stem_instrument,
)

SOURCES = ["medleydb", "mixing_secrets", "musdb", "synth"]


def _labels_of(value) -> list[str]:
    return [("" if v is None else str(v)) for v in (value if isinstance(value, list) else [value])]


def _real_stem_labels(meta_dir: Path):
    """(track, stem labels, raw labels) of every stem of every real metadata file."""
    for path in sorted(meta_dir.glob("*_METADATA.yaml")):
        doc = yaml.safe_load(path.read_text())
        track = path.name[: -len("_METADATA.yaml")]
        for stem in doc["stems"].values():
            raws = [lab for raw in (stem.get("raw") or {}).values() for lab in _labels_of(raw["instrument"])]
            yield track, _labels_of(stem["instrument"]), raws


def test_taxonomy_tree_and_targets():
    tax = load_taxonomy()
    assert tax.targets == ("vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano")
    assert tax.covers("vocals", "backing_vocals") and tax.covers("bass", "synth_bass")
    assert not tax.covers("guitar", "piano")


@pytest.mark.parametrize("source", SOURCES)
def test_label_maps_point_into_the_taxonomy(source):
    lm = load_label_map(source)
    tax = load_taxonomy()
    assert lm.labels and all(v in tax for v in lm.labels.values())
    assert lm.source == source and lm.path.name == f"{source}.yaml"
    assert lm.unannotated <= set(lm.labels)
    assert len(label_map_hash(source)) == 64


def test_synth_map_is_the_identity_over_the_taxonomy():
    lm = load_label_map("synth")
    assert lm.labels == {name: name for name in load_taxonomy().instruments}


@pytest.mark.parametrize("source, n_tracks, n_stems", [("medleydb", 330, 2014), ("mixing_secrets", 258, 4529)])
def test_every_real_label_maps(shared_data, source, n_tracks, n_stems):
    """All stems (list-valued included) and all raw labels of every real metadata file map."""
    meta_dir = shared_data / source / "metadata"
    assert len(list(meta_dir.glob("*_METADATA.yaml"))) == n_tracks
    stems = 0
    unmapped = set()
    listed = 0
    for track, labels, raws in _real_stem_labels(meta_dir):
        stems += 1
        listed += len(labels) > 1
        try:
            canonical = stem_instrument(source, labels, track)
        except TaxonomyError:
            unmapped.update(lab for lab in labels if normalize_label(lab) not in load_label_map(source).labels)
            continue
        assert canonical == map_label(source, labels[0], track=track)   # the primary decides
        for lab in raws:
            try:
                map_label(source, lab, track=track)
            except TaxonomyError:
                unmapped.add(lab)
    assert stems == n_stems
    assert listed > 0                       # list-valued instruments were really exercised
    assert not unmapped, f"unmapped {source} labels: {sorted(unmapped)}"


def test_mixing_secrets_label_table_maps(shared_data):
    """mixing_secrets_insts.csv: the corpus's own count of its ~230 stem labels."""
    rows = (shared_data / "mixing_secrets" / "mixing_secrets_insts.csv").read_text().splitlines()
    labels = [r.rsplit(",", 1)[0] for r in rows if r.strip()]
    assert len(labels) > 200
    for lab in labels:
        map_label("mixing_secrets", lab)


def test_every_medleydb_taxonomy_leaf_maps(shared_data):
    doc = yaml.safe_load((shared_data / "medleydb" / "resources" / "taxonomy.yaml").read_text())
    leaves = []

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        else:
            leaves.extend(node)

    walk(doc)
    assert len(leaves) == 122
    for leaf in leaves:
        map_label("medleydb", leaf)
    # and 'woodwind section', used by MedleyDB but missing from its taxonomy
    assert map_label("medleydb", "woodwind section") == "winds"


def test_known_mappings():
    assert map_label("medleydb", "male singer") == "lead_vocals"
    assert stem_instrument("medleydb", ["male singer", "vocalists"]) == "lead_vocals"
    assert stem_instrument("medleydb", ["vocalists", "male singer"]) == "backing_vocals"
    assert map_label("medleydb", "distorted electric guitar") == "electric_guitar"
    assert map_label("mixing_secrets", "KickTrigger") == "drums"
    assert map_label("mixing_secrets", "Loop") == "drums"
    assert map_label("mixing_secrets", "DrumLoop ") == "drums"       # trailing space in the data
    assert map_label("mixing_secrets", "BackingVox") == "backing_vocals"
    assert map_label("musdb", "other") == "other"
    lm = load_label_map("musdb")
    assert not lm.is_annotated(["other"]) and lm.is_annotated(["vocals"])
    assert not load_label_map("medleydb").is_annotated(["Unlabeled"])


def test_unmapped_label_error_names_label_track_and_yaml():
    with pytest.raises(TaxonomyError) as ei:
        stem_instrument("medleydb", ["male singer", "theremin choir"], track="Foo_Bar")
    msg = str(ei.value)
    assert "'theremin choir'" in msg and "Foo_Bar" in msg
    assert str(load_label_map("medleydb").path) in msg


def _registry(tmp_path, labels: str) -> Path:
    reg = tmp_path / "registry"
    (reg / "sources").mkdir(parents=True)
    (reg / "taxonomy.yaml").write_bytes((tx.REGISTRY_DIR / "taxonomy.yaml").read_bytes())
    (reg / "sources" / "medleydb.yaml").write_text(f"layout: {{}}\nlabels:\n{labels}")
    return reg


@pytest.mark.parametrize("labels, match", [
    ("  piano: pianoforte\n", "'pianoforte', which is not a canonical instrument"),
    ("  Piano: piano\n  piano: organ\n", "listed twice"),
])
def test_bad_label_map_is_refused(tmp_path, monkeypatch, labels, match):
    reg = _registry(tmp_path, labels)
    monkeypatch.setattr(tx, "REGISTRY_DIR", reg)
    with pytest.raises(TaxonomyError, match=match):
        load_label_map("medleydb")


def test_registry_hash_changes_with_a_label_map(tmp_path, monkeypatch):
    before = registry_hash(["medleydb", "musdb"])
    assert before == registry_hash(["musdb", "medleydb"])
    reg = _registry(tmp_path, "  piano: piano\n")
    (reg / "sources" / "musdb.yaml").write_bytes((tx.REGISTRY_DIR / "sources" / "musdb.yaml").read_bytes())
    monkeypatch.setattr(tx, "REGISTRY_DIR", reg)
    assert registry_hash(["medleydb", "musdb"]) != before
