# The two commands: `make demo` and `make test`. Both create .venv from the lock file when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline-friendly, quiet, project-local Prefect (an ephemeral API on SQLite; no server to start).
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL := WARNING
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: setup demo test test-fast bench lock clean help

help:
	@echo "make demo   - set up .venv, run the whole pipeline (dvc repro) on the synthesized default corpus"
	@echo "make test   - set up .venv, run the test suite"
	@echo "make bench  - run the benchmarks in bench/ and write bench/results.md"
	@echo "make setup  - only create .venv and install the pinned dependencies"
	@echo "make lock   - re-resolve requirements.in into requirements.lock"

setup: $(STAMP)

# requirements.lock pins the full closure, so it is installed with --no-deps: no resolver runs and
# two installs are the same install. --no-deps also keeps out two packages we must not get:
# pyaudio (tinysoundfont's live-playback dependency; needs portaudio headers, unused offline) and
# torchaudio (openunmix's; the registry only has a CUDA build that cannot load beside CPU torch;
# see training/umx.py for how Open-Unmix is imported without it).
$(STAMP): requirements.lock pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/iass report show reports/evaluate

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

lock:
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.in
	$(BIN)/pip install --quiet --no-deps tinysoundfont openunmix
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

clean:
	rm -rf $(VENV) .prefect .pytest_cache
