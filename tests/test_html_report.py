"""The HTML pages of an evaluation (``iass evaluate`` -> html/index.html, ``iass report html``)
and of a corpus (``iass corpus report``): written from the fixtures, self-contained, and loaded
in headless Chromium from file:// with no console error, every <audio> decoding and every <img>
loading; a screenshot of each page is written beside it (screenshot.png) for a person to look at.

The browser part needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them
when it can); without them it skips and says how to install them."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from corpus_fixtures import BandSeparator, write_eval_corpus, write_fixture_corpus
from iass.evaluation.evaluate import EvaluateConfig, evaluate
from iass.evaluation.separate import SeparationConfig
from iass.pipelines import html_media as hm

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
CHROME_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-dev-shm-usage", "--mute-audio")


@pytest.fixture(scope="module")
def eval_report(tmp_path_factory):
    """``iass evaluate`` on two tracks of the evaluation fixture (one MUSDB-like, with unknown
    labels), as the CLI would run it: the HTML page is part of the report."""
    base = tmp_path_factory.mktemp("html-eval")
    write_eval_corpus(base / "corpus")
    config = EvaluateConfig(separation=SeparationConfig(weighting="hard"), workers=1, limit=2)
    evaluate(base / "corpus", [BandSeparator()], base / "report", config, progress=False)
    return base / "report"


@pytest.fixture(scope="module")
def corpus_report(tmp_path_factory):
    """``iass corpus report`` (the CLI) on the training fixture with one rejected track."""
    from iass.cli import main
    from iass.io import atomic_write_parquet
    from iass.pipelines.corpus_format import REJECTS_SCHEMA, CorpusLayout

    base = tmp_path_factory.mktemp("html-corpus")
    write_fixture_corpus(base / "corpus")
    atomic_write_parquet(CorpusLayout(base / "corpus").rejects, pa.Table.from_pylist([{
        "source": "medleydb", "native_id": "Broken_Song", "path": "/src/Broken_Song",
        "stage": "read", "reason": "Broken_Song_STEM_01.wav: truncated <RIFF> chunk"}],
        schema=REJECTS_SCHEMA))
    assert main(["corpus", "report", str(base / "corpus"), "--out", str(base / "report"),
                 "--tracks", "3"]) == 0
    return base / "report"


# ----------------------------------------------------------------------- without a browser
def test_pick_excerpt_takes_the_window_with_most_label_changes():
    hop, sr = 100, 1000
    labels = np.zeros((2, 200))                 # 20 s of frames (0.1 s each)
    labels[0, 120:125] = 1                      # changes at frames 120 and 125
    labels[1, 130:131] = 1
    labels[1, 50:51] = np.nan                   # unknown counts as silent
    start, length = hm.pick_excerpt(labels, hop, 200 * hop, sr, seconds=5.0)
    assert length == 5000 and start <= 12000 and start + length >= 13100
    assert hm.pick_excerpt(labels, hop, 3000, sr, seconds=5.0) == (0, 3000)   # a short track: all of it


def test_evaluate_writes_the_page_and_its_assets(eval_report):
    index = eval_report / "html" / "index.html"
    text = index.read_text()
    excerpts = sorted((eval_report / "html" / "assets").glob("*/excerpt.json"))
    assert len(excerpts) == 2
    meta = json.loads(excerpts[-1].read_text())
    assert meta["seconds"] == pytest.approx(3.0) and meta["sample_rate"] == 44100
    first = next(iter(meta["targets"].values()))
    assert [m["label"] for m in first["methods"]] == ["IASS (weighted)", "IASS (unweighted)", "IBM"]
    thresholds = next(iter(meta["runs"].values()))["thresholds"]
    assert set(thresholds.values()) == {0.5}
    # every linked file exists, nothing comes from the network
    links = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert links and not [u for u in links if re.match(r"[a-z]+:", u)]
    for u in links:
        assert (index.parent / u).is_file(), u
    audio = [u for u in links if u.endswith(".mp3")]
    n_targets = sum(len(json.loads(p.read_text())["targets"]) for p in excerpts)
    assert len(audio) == 2 + 4 * n_targets     # mixtures + reference and 3 methods per target
    # 44.1 kHz stereo MP3 of the excerpt's length
    probe = subprocess.run([hm.ffmpeg_exe(), "-hide_banner", "-i", str(index.parent / audio[0])],
                           capture_output=True, text=True).stderr
    assert "mp3" in probe and "44100 Hz" in probe and "stereo" in probe, probe
    for metric in ("SDR", "SIR", "PES"):
        assert f"<h3>{metric}</h3>" in text
    assert "threshold" in text and text.count('class="activity"') >= n_targets - 2


def test_report_html_rerenders_from_the_saved_assets(eval_report, capsys):
    from iass.cli import main

    index = eval_report / "html" / "index.html"
    before = index.read_text()
    index.unlink()
    plot = next((eval_report / "html" / "assets").glob("*/*/activity.png"))
    plot.unlink()
    assert main(["report", "html", str(eval_report)]) == 0
    assert index.read_text() == before and plot.is_file()
    assert "index.html" in capsys.readouterr().out
    assert main(["report", "html", str(eval_report / "nothing")]) == 1
    assert "no results.parquet" in capsys.readouterr().err


def test_report_without_excerpts_renders_its_tables(eval_report, tmp_path):
    from iass.evaluation.html_report import render

    for name in ("results.parquet", "activity.parquet", "metrics.json", "summary.md"):
        shutil.copyfile(eval_report / name, tmp_path / name)
    text = render(tmp_path).read_text()
    assert "<h3>SDR</h3>" in text and "No excerpts saved" in text and "<audio" not in text


def test_corpus_report_page(corpus_report):
    text = (corpus_report / "index.html").read_text()
    assert "Broken_Song_STEM_01.wav: truncated &lt;RIFF&gt; chunk" in text
    for img in ("hours_source_split.png", "hours_instrument.png", "activity_share.png"):
        assert f"assets/{img}" in text and (corpus_report / "assets" / img).is_file()
    sections = re.findall(r'<section class="track" id="([^"]+)"', text)
    assert len(sections) == 3 and any(s.startswith("musdb-") for s in sections)
    links = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert not [u for u in links if re.match(r"[a-z]+:", u) or not (corpus_report / u).is_file()]
    mp3 = [u for u in links if u.endswith(".mp3")]
    info = sf.info(str(corpus_report / mp3[0])) if hasattr(sf, "info") else None
    assert info is None or info.samplerate == 44100


# -------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"headless Chromium is not installed (needs {CHROMIUM} and {CHROMEDRIVER}): "
                    f"{INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


MEDIA_STATE = """
return {
  audio: Array.from(document.querySelectorAll('audio')).map(a => ({
    src: a.currentSrc || a.src, ready: a.readyState, duration: a.duration,
    error: a.error ? a.error.code : null})),
  images: Array.from(document.querySelectorAll('img')).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth})),
  height: document.documentElement.scrollHeight,
  overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
};"""


def _check_page(driver, index: Path, timeout: float = 30.0) -> dict:
    """Load ``index`` from file://, wait for every audio's metadata and every image; assert no
    console error, write screenshot.png beside it. Returns the final media state."""
    driver.set_window_size(1400, 1000)
    driver.get(index.resolve().as_uri())
    driver.execute_script("document.querySelectorAll('audio').forEach(a => a.load());")
    deadline = time.monotonic() + timeout
    while True:
        state = driver.execute_script(MEDIA_STATE)
        pending = [a for a in state["audio"] if a["error"] is None and a["ready"] < 1]
        pending += [i for i in state["images"] if not i["complete"]]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    assert state["audio"] and state["images"]
    bad_audio = [a for a in state["audio"]
                 if a["error"] is not None or a["ready"] < 1 or not (a["duration"] or 0) > 0]
    assert not bad_audio, bad_audio[:5]
    bad_images = [i for i in state["images"] if not i["complete"] or i["width"] <= 0]
    assert not bad_images, bad_images[:5]
    assert not state["overflow"], "the page is wider than the window"
    driver.set_window_size(1400, min(int(state["height"]) + 140, 9000))
    time.sleep(0.3)
    driver.save_screenshot(str(index.parent / "screenshot.png"))
    return state


def test_evaluation_page_in_chromium(browser, eval_report):
    index = eval_report / "html" / "index.html"
    state = _check_page(browser, index)
    excerpts = list((eval_report / "html" / "assets").glob("*/excerpt.json"))
    assert all(a["duration"] == pytest.approx(3.0, abs=0.1) for a in state["audio"])
    assert len(state["audio"]) == index.read_text().count("<audio")
    assert len(excerpts) == 2 and (index.parent / "screenshot.png").stat().st_size > 10_000


def test_corpus_page_in_chromium(browser, corpus_report):
    index = corpus_report / "index.html"
    state = _check_page(browser, index)
    assert len(state["audio"]) == index.read_text().count("<audio") > 3
    assert (index.parent / "screenshot.png").stat().st_size > 10_000
