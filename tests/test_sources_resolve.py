"""One resolver for the sources (pipelines/sources/resolve.py): params.yaml ``sources:`` as a plain
path or as ``{path: ..., <adapter option>: ...}``, and ``--source NAME=PATH`` (+ ``-o NAME.KEY=VALUE``)
resolve to the same specs and build the same corpus (a real Prefect flow); options reach the
adapter and key the cache; a bad entry is one SourceError line naming the source and the key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import source_fixtures as fx
from iass.cli import main
from iass.errors import SourceError
from iass.pipelines import build as B
from iass.pipelines.sources.resolve import SourceSpec, resolve_sources

CORPUS = {"hop": 1024, "num_shards": 4, "workers": 2, "runner": "threads",
          "labels": {"threshold": 0.5}}


@pytest.fixture(scope="module", autouse=True)
def prefect_harness():
    """One temporary Prefect server for the module (starting one per flow run costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):   # a loaded 2-core machine starts it slowly
        yield


@pytest.fixture(autouse=True)
def _prefect_env(monkeypatch):
    # a build (run_build) applies prefect_environment(); set its variables here so the test process's
    # environment is restored afterwards
    for key, value in B.prefect_defaults().items():
        monkeypatch.setenv(key, os.environ.get(key, value))


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    """<base>/data/mdb/Audio (metadata beside the audio) and <base>/data/apart/{Audio,Metadata}."""
    base = tmp_path_factory.mktemp("trees")
    fx.build_medleydb(base / "data" / "mdb")
    fx.build_medleydb(base / "data" / "apart", metadata_apart=True)
    return base


def _params(path: Path, sources) -> Path:
    doc = {"corpus": dict(CORPUS)}
    if sources is not None:
        doc["sources"] = sources
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _build(capsys, params: Path, out: Path, *extra: str) -> dict:
    rc = main(["corpus", "build", "--params", str(params), "--out", str(out), "--no-progress", *extra])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    return json.loads((out / "manifest.json").read_text())


def _error(capsys, *argv: str) -> str:
    rc = main(list(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------ resolving
def test_the_forms_resolve_to_the_same_specs(trees, monkeypatch):
    monkeypatch.chdir(trees)
    audio = trees / "data" / "mdb" / "Audio"
    plain = resolve_sources({"medleydb": "mdb/Audio"}, base_dir=trees / "data")
    mapping = resolve_sources({"medleydb": {"path": "mdb/Audio"}}, base_dir=trees / "data")
    cli = resolve_sources(None, items=["medleydb=data/mdb/Audio"])
    assert plain == mapping == cli == [SourceSpec("medleydb", audio, {})]
    # CLI items replace the params' sources; an option equal to its default is no option
    assert resolve_sources({"musdb": "nowhere"}, items=[f"medleydb={audio}"],
                           options=["medleydb.max_pad_seconds=1.0"]) == cli
    meta = trees / "data" / "apart" / "Metadata"
    opt = resolve_sources({"medleydb": {"path": "apart/Audio", "metadata_dir": "apart/Metadata"}},
                          base_dir=trees / "data")
    opt_cli = resolve_sources(None, items=["medleydb=data/apart/Audio"],
                              options=["medleydb.metadata_dir=data/apart/Metadata"])
    assert opt == opt_cli == [SourceSpec("medleydb", trees / "data" / "apart" / "Audio",
                                         {"metadata_dir": str(meta)})]


@pytest.mark.parametrize("sources, message", [
    ({"nosuch": "x"}, "sources.nosuch: unknown source 'nosuch' (registered: medleydb, "),
    ({"medleydb": {"metadata_dir": "x"}}, "sources.medleydb: no 'path' key"),
    ({"medleydb": "missing"}, "sources.medleydb: {base}/missing: no such directory"),
    ({"medleydb": {"path": "missing"}}, "sources.medleydb.path: {base}/missing: no such directory"),
    ({"medleydb": {"path": "mdb/Audio", "foo": 1}},
     "sources.medleydb: unknown option 'foo' (known: annotations_dir, annotations_versions, "),
    ({"medleydb": {"path": "mdb/Audio", "metadata_dir": "/x"}},
     "sources.medleydb.metadata_dir: /x: no such directory"),
])
def test_errors_are_one_line_naming_the_key(trees, sources, message):
    base = trees / "data"
    with pytest.raises(SourceError) as err:
        resolve_sources(sources, base_dir=base)
    text = str(err.value)
    assert "\n" not in text and text.startswith(message.format(base=base)), text
    with pytest.raises(SourceError, match="^" + message.format(base=base).split(":")[0]):
        B.config_from_params({"sources": sources}, base_dir=base)


def test_cli_errors_name_the_key(trees, tmp_path, capsys):
    params = _params(tmp_path / "p" / "params.yaml",
                     {"medleydb": {"path": str(trees / "data" / "mdb" / "Audio"), "foo": 1}})
    out = str(tmp_path / "out")
    assert _error(capsys, "corpus", "build", "--params", str(params), "--out", out).startswith(
        "error: sources.medleydb: unknown option 'foo' (known: ")
    assert _error(capsys, "corpus", "build", "--params", str(params), "--out", out,
                  "--source", "medleydb=/no/such") == "error: --source medleydb: /no/such: no such directory"
    assert _error(capsys, "corpus", "build", "--params", str(params), "--out", out,
                  "--source", f"medleydb={trees / 'data' / 'mdb' / 'Audio'}",
                  "-o", "medleydb.metadata_dir=/x") == \
        "error: --option medleydb.metadata_dir: /x: no such directory"
    assert _error(capsys, "corpus", "build", "--params", str(params), "--out", out,
                  "--source", "medleydb").startswith("error: --source 'medleydb': expected NAME=PATH")
    assert not (tmp_path / "out" / "manifest.json").exists()
    # iass sources check: the same resolver, usage exit 2
    assert main(["sources", "check", "--params", str(params), "--no-progress"]) == 2
    assert "sources.medleydb: unknown option 'foo'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- building
def test_every_form_builds_the_same_corpus(trees, tmp_path, capsys, monkeypatch):
    """plain path == {path: ...} == --source NAME=PATH; the option form reads metadata kept apart."""
    cfgdir = tmp_path / "cfg"
    plain = _build(capsys, _params(cfgdir / "plain.yaml", {"medleydb": os.path.relpath(
        trees / "data" / "mdb" / "Audio", cfgdir)}), tmp_path / "plain")
    mapping = _build(capsys, _params(cfgdir / "mapping.yaml", {"medleydb": {"path": os.path.relpath(
        trees / "data" / "mdb" / "Audio", cfgdir)}}), tmp_path / "mapping")
    monkeypatch.chdir(trees)
    cli = _build(capsys, _params(cfgdir / "none.yaml", None), tmp_path / "cli",
                 "--source", "medleydb=data/mdb/Audio")
    assert plain["counts"]["tracks"] == 2 and plain["counts"]["rejects"] == 0
    assert plain["corpus_version"] == mapping["corpus_version"] == cli["corpus_version"]

    # metadata apart: without the option no track has metadata (all quarantined) ...
    apart = trees / "data" / "apart"
    without = _build(capsys, _params(cfgdir / "apart0.yaml", {"medleydb": str(apart / "Audio")}),
                     tmp_path / "apart0")
    assert without["counts"] == {**without["counts"], "tracks": 0, "rejects": 2}
    # ... with it (params, relative to the params file; or -o) the adapter of the build reads it
    opt_params = _params(cfgdir / "apart.yaml", {"medleydb": {
        "path": os.path.relpath(apart / "Audio", cfgdir),
        "metadata_dir": os.path.relpath(apart / "Metadata", cfgdir)}})
    opt = _build(capsys, opt_params, tmp_path / "apart")
    opt_cli = _build(capsys, _params(cfgdir / "none.yaml", None), tmp_path / "apart_cli",
                     "--source", "medleydb=data/apart/Audio",
                     "-o", "medleydb.metadata_dir=data/apart/Metadata")
    assert opt["counts"]["tracks"] == 2 and opt["counts"]["rejects"] == 0
    assert opt["corpus_version"] == opt_cli["corpus_version"]
    # the same audio and labels as the plain tree: only the metadata files' place differs
    assert opt["counts"] == plain["counts"]


def test_options_reach_the_cache_key(trees, tmp_path):
    audio = trees / "data" / "apart" / "Audio"
    meta = trees / "data" / "apart" / "Metadata"
    params = {"corpus": dict(CORPUS)}

    def cfg(**options):
        return B.config_from_params(params, sources={"medleydb": {"path": str(audio),
                                                                  "metadata_dir": str(meta), **options}},
                                    out=str(tmp_path / "out"), progress=False)

    first = B.run_build(cfg())
    assert first["stats"]["built"] == 2
    assert B.run_build(cfg())["stats"]["cached"] == 2           # unchanged: the fast path
    changed = B.run_build(cfg(max_pad_seconds=0.5))            # another option value: rebuilt
    assert changed["stats"]["built"] == 2
    assert B.run_build(cfg(max_pad_seconds=0.5))["stats"]["cached"] == 2


def test_no_options_keep_the_cache_keys(trees, tmp_path):
    """Without adapter options, the keys (and so the corpus version) are those of every earlier
    build: the options enter neither BuildConfig nor input_digest."""
    cfg = B.config_from_params({"corpus": dict(CORPUS)},
                               sources={"medleydb": str(trees / "data" / "mdb" / "Audio")},
                               out=str(tmp_path / "out"), progress=False)
    assert cfg.source_options == ()
    with_default = B.config_from_params({"corpus": dict(CORPUS)}, sources={"medleydb": {
        "path": str(trees / "data" / "mdb" / "Audio"), "max_pad_seconds": 1.0}},
        out=str(tmp_path / "out"), progress=False)
    assert with_default == cfg


# ------------------------------------------------------------------ Prefect's environment
def test_importing_the_build_leaves_the_environment_alone_and_prefect_environment_applies():
    code = """
import os, sys
env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
import iass.pipelines.build as B
assert {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} == env, "import changed os.environ"
assert "prefect" not in sys.modules
import prefect  # imported first: its settings are re-read by prefect_environment()
from prefect.settings import get_current_settings
from iass import REPO_ROOT
assert get_current_settings().home != REPO_ROOT / ".prefect"
assert sorted(B.prefect_environment()) == sorted(B.prefect_defaults())
s = get_current_settings()
assert s.home == REPO_ROOT / ".prefect", s.home
assert s.logging.level == "WARNING" and s.server.analytics_enabled is False
assert B.prefect_environment() == {}   # idempotent
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(Path(env.get("TMPDIR", "/tmp")))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
    # a user's own setting wins
    code2 = ("import iass.pipelines.build as B; from prefect.settings import get_current_settings;"
             "assert 'PREFECT_HOME' not in B.prefect_environment();"
             "print(get_current_settings().home)")
    env["PREFECT_HOME"] = "/tmp/iass-prefect-home-test"
    res = subprocess.run([sys.executable, "-c", code2], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "/tmp/iass-prefect-home-test", res.stderr[-3000:]
