# make repro  - create .venv if needed, install, run the whole benchmark (dvc repro)
# make test   - create .venv if needed, run the test suite (offline, CPU)
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install repro test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	python -m pytest -q

test-fast: $(STAMP)
	python -m pytest -q -m "not slow"

lint: $(STAMP)
	ruff check src tests pipelines benchmarks
	ruff format --check src tests pipelines benchmarks

format: $(STAMP)
	ruff check --fix src tests pipelines benchmarks
	ruff format src tests pipelines benchmarks

clean:
	rm -rf results reports/figures mlflow.db optuna.db mlartifacts

bench: $(STAMP)
	python benchmarks/step_overhead.py
	python benchmarks/seeds_parallel.py
	python benchmarks/stacked_trials.py
	python benchmarks/published_baselines.py
