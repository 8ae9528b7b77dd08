"""The paper's experiments as data (issue 18): experiments/<name>.yaml (complete params files) and
the DVC chains that run them (dvc.yaml: the demo stand-ins; experiments/real/dvc.yaml: real data)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from iass import REPO_ROOT
from iass.config import load_params
from iass.pipelines.build.config import config_from_params
from iass.training.config import TrainConfig

EXP_DIR = REPO_ROOT / "experiments"
SIX = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]
MUSDB4 = ["vocals", "drums", "bass", "other"]
#: experiment -> (figure, targets, its demo stand-in or None, synthesized layouts it reads)
EXPERIMENTS = {
    "musdb": ("fig3", MUSDB4),
    "medleydb_ms": ("fig4", SIX),
    "demo_musdb": ("fig3", MUSDB4),
    "demo_medleydb_ms": ("fig4", SIX),
}
DEMO_LAYOUTS = {"demo_musdb": {"musdb": "musdb-hq"},
                "demo_medleydb_ms": {"medleydb": "medleydb", "mixing_secrets": "mixing_secrets"}}
#: what a real experiment may set apart from its demo stand-in (data, budget, network size);
#: everything else (labels, splits rule, STFT, targets, recipe, evaluation) is the same
REAL_VS_DEMO = ("sources", "corpus.out", "corpus.splits.declared", "corpus.splits.song_level_artists",
                "train.chunk_seconds", "train.batch_size", "train.max_steps", "train.steps_per_epoch",
                "train.valid_chunks_per_track", "train.workers", "train.threads",
                "model.iass.preset", "model.umx.hidden_size")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def test_the_experiment_files_are_the_ones_named():
    files = {p.stem for p in EXP_DIR.glob("*.yaml")} - {"musdb18_splits"}
    assert files == set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_each_experiment_is_a_complete_params_file(name, tmp_path):
    figure, targets = EXPERIMENTS[name]
    path = EXP_DIR / f"{name}.yaml"
    params = load_params(path)
    for key in ("sources", "corpus", "stft", "train", "model", "evaluate"):
        assert params.get(key), f"{name}: no {key}"
    assert params["model"]["iass"]["preset"] and params["model"]["umx"]["hidden_size"]
    train = TrainConfig.from_section(params["train"])
    assert list(train.targets) == targets
    assert params["evaluate"]["figure"] == figure and params["evaluate"]["split"] == "test"
    assert params["stft"]["hop"] == params["corpus"]["hop"]
    # the build reads it as `iass corpus build --params` does (paths relative to the file) and
    # writes where dvc.yaml says: datasets/corpora/<name>
    cfg = config_from_params(params, sources={"synth": str(tmp_path)}, base_dir=EXP_DIR)
    assert Path(cfg.out).resolve() == REPO_ROOT / "datasets" / "corpora" / name
    assert cfg.split_params["declared"]["musdb"]              # MUSDB's split, as a list
    if name in DEMO_LAYOUTS:
        synth = load_params(REPO_ROOT / "params.yaml")["synth"]
        want = {src: REPO_ROOT / synth["out"] / layout for src, layout in DEMO_LAYOUTS[name].items()}
        assert {k: (EXP_DIR / v).resolve() for k, v in params["sources"].items()} == want
        assert set(DEMO_LAYOUTS[name].values()) <= set(synth["layouts"])
    else:
        assert all(Path(str(v)).is_absolute() for v in params["sources"].values())


@pytest.mark.parametrize("real, demo", [("musdb", "demo_musdb"), ("medleydb_ms", "demo_medleydb_ms")])
def test_a_demo_is_its_real_experiment_on_synthesized_data(real, demo):
    r, d = _flat(load_params(EXP_DIR / f"{real}.yaml")), _flat(load_params(EXP_DIR / f"{demo}.yaml"))
    differ = {k for k in set(r) | set(d) if r.get(k) != d.get(k)}
    assert {k for k in differ if not k.startswith(REAL_VS_DEMO)} == set()


def test_all_experiments_share_labels_and_stft_with_params_yaml():
    base = load_params(REPO_ROOT / "params.yaml")
    for name in EXPERIMENTS:
        p = load_params(EXP_DIR / f"{name}.yaml")
        assert p["stft"] == base["stft"], name
        assert p["corpus"]["labels"] == base["corpus"]["labels"], name
        assert p["corpus"]["sample_rate"] == base["corpus"]["sample_rate"], name


def test_the_musdb_stand_in_has_musdb_like_splits():
    """The synthesized MUSDB layout writes train/ and test/ only, and none of its songs is on MUSDB's
    validation list: demo_musdb declares a split with valid and test songs that the synthesizer
    writes (params.yaml synth.layouts.musdb-hq), in MUSDB's proportions."""
    from iass.pipelines.synth.compose import compose_song
    from iass.pipelines.synth.layouts import musdb_name, musdb_split

    base = load_params(REPO_ROOT / "params.yaml")["synth"]
    layout = base["layouts"]["musdb-hq"]
    songs = [compose_song(layout["seed"], i, float(base["duration"])) for i in range(layout["tracks"])]
    folder = {musdb_name(s): musdb_split(s) for s in songs}
    declared = load_params(EXP_DIR / "demo_musdb.yaml")["corpus"]["splits"]["declared"]["musdb"]
    assert set(declared) <= set(folder)
    split = {n: declared.get(n, folder[n]) for n in folder}
    counts = {s: sum(1 for v in split.values() if v == s) for s in ("train", "valid", "test")}
    assert counts["valid"] >= 3 and counts["test"] >= 10 and counts["train"] >= 20, counts
    assert all(v in ("valid", "test") for v in declared.values())


# ----------------------------------------------------------------------------------- DVC
@pytest.fixture(scope="module")
def dvc_index(tmp_path_factory):
    """DVC's own reading of dvc.yaml + experiments/real/dvc.yaml, in a copy (no SCM, no data)."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("dvcrepo")
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(EXP_DIR, root / "experiments")
    Repo.init(str(root), no_scm=True)
    cwd = os.getcwd()
    os.chdir(root)          # DVC names stages relative to the working directory, as `dvc` does
    try:
        with Repo(str(root)) as repo:
            index = repo.index
            stages = {s.addressing: s for s in index.stages}
            # what a plain `dvc repro` (no target) reproduces: the stages of ./dvc.yaml
            default = {s.addressing for s in repo.stage.collect("dvc.yaml")}
            yield root, stages, index.graph, default
    finally:
        os.chdir(cwd)


def _stage(stages, name: str, exp: str):
    real = exp in ("musdb", "medleydb_ms")
    return stages[f"experiments/real/dvc.yaml:{name}@{exp}" if real else f"{name}@{exp}"]


@pytest.mark.parametrize("exp", sorted(EXPERIMENTS))
def test_each_experiment_is_its_own_chain_reading_its_own_params(dvc_index, exp):
    import networkx as nx

    root, stages, graph, _ = dvc_index
    chain = {n: _stage(stages, n, exp) for n in ("corpus", "train_iass", "train_umx", "evaluate")}
    for name, st in chain.items():
        assert Path(st.wdir) == root                     # paths from the repository root
        assert [p.def_path for p in st.params] == [f"experiments/{exp}.yaml"], name
        outs = [str(o.def_path) for o in st.outs]
        want = {"corpus": f"datasets/corpora/{exp}", "train_iass": f"runs/{exp}/iass/",
                "train_umx": f"runs/{exp}/umx/", "evaluate": f"reports/{exp}/"}[name]
        assert outs and all(o.startswith(want) for o in outs), (name, outs)
        assert exp in st.cmd and f"--params experiments/{exp}.yaml" in st.cmd
    params = {n: set(chain[n].params[0].params) for n in chain}
    assert params["corpus"] == {"sources", "corpus"} and params["evaluate"] == {"evaluate"}
    assert params["train_iass"] == {"stft", "train", "model.iass"}
    assert params["train_umx"] == {"stft", "train", "model.umx"}
    # upstream of the evaluation: its own chain and the synthesized data it reads, nothing else
    upstream = {s.addressing for s in nx.descendants(graph, chain["evaluate"])}
    own = {chain[n].addressing for n in ("corpus", "train_iass", "train_umx")}
    synth = {f"synth@{layout}" for layout in DEMO_LAYOUTS.get(exp, {}).values()}
    assert upstream == own | synth


def test_plain_dvc_repro_runs_the_demos_only(dvc_index):
    _, stages, _, default = dvc_index
    want = {f"{n}@{e}" for n in ("corpus", "train_iass", "train_umx", "evaluate", "corpus_report")
            for e in DEMO_LAYOUTS}
    synth = load_params(REPO_ROOT / "params.yaml")["synth"]["layouts"]
    assert default == want | {f"synth@{k}" for k in synth}
    assert {s for s in stages if s.startswith("experiments/real/dvc.yaml:")} == {
        f"experiments/real/dvc.yaml:{n}@{e}"
        for n in ("corpus", "train_iass", "train_umx", "evaluate", "corpus_report")
        for e in ("musdb", "medleydb_ms")}
