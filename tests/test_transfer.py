"""``iass transfer`` (the cross-renderer experiment): its checks come before any work.

The experiment itself trains networks (minutes); its numbers are in docs/results.md, made by the
commands listed there. Here: every soundfont and option is checked before anything is written,
and a builtin soundfont is named portably in the commands it writes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from iass.errors import ConfigError
from iass.evaluation.transfer import TransferConfig, run_transfer, spec_of
from iass.pipelines.synth import soundfonts


def test_bad_soundfont_or_pool_is_one_line_error_before_anything_is_written(tmp_path):
    out = tmp_path / "t"
    r = subprocess.run([sys.executable, "-m", "iass.cli", "transfer", "--out", str(out),
                        "--test-soundfont", "merlin", str(tmp_path / "missing.sf2")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: ") and "missing.sf2: soundfont not found" in r.stderr
    assert not out.exists()
    for pools, tests, says in (([["timgm6mb"], ["timgm6mb"]], ["merlin"], "training pool is listed twice"),
                               ([["timgm6mb"]], ["merlin", "merlin"], "listed twice"),
                               ([["timgm6mb", "nosuch"]], ["merlin"], "unknown soundfont 'nosuch'")):
        with pytest.raises(ConfigError, match=says):
            run_transfer(TransferConfig(out=str(out), train_pools=pools, test_soundfonts=tests))
        assert not out.exists()


def test_builtins_are_named_by_name_and_user_files_by_path(tmp_path):
    import shutil

    mine = tmp_path / "Mine.sf2"
    shutil.copyfile(soundfonts.resolve("timgm6mb").path, mine)
    assert spec_of(soundfonts.resolve("merlin")) == "merlin"
    assert spec_of(soundfonts.resolve(str(mine))) == str(mine.resolve())
