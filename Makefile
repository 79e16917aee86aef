# make repro  - create .venv if needed, install, run the whole benchmark (dvc repro)
# make test   - create .venv if needed, run the test suite (offline, CPU)
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install browser postgres repro test test-fast lint format bench clean

PLOTS_PAGE := .dvc/plots/offline.html

install: $(STAMP) $(PLOTS_PAGE)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# `dvc plots show` without a network: vega, vega-lite and vega-embed from npm, inlined in DVC's page template.
$(PLOTS_PAGE): tools/vendor_plots.py $(STAMP)
	$(BIN)/python tools/vendor_plots.py
	touch $@

# The HTML report and the DVC plots page are tested in a real browser: the system's Chromium (Playwright's own
# browser download is not used). Debian/Ubuntu package; root or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "install chromium: the tests open the HTML pages in it" >&2; exit 1; }; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# The scale-out tests start a throw-away PostgreSQL cluster on 127.0.0.1 (tests/conftest.py: initdb + pg_ctl
# of Debian's postgresql package, as the postgres user when run as root).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "install PostgreSQL: the scale-out tests start a cluster" >&2; exit 1; }; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }

repro: install
	dvc repro

test: install browser postgres
	python -m pytest -q

test-fast: install
	python -m pytest -q -m "not slow"

lint: $(STAMP)
	ruff check src tests pipelines benchmarks tools
	ruff format --check src tests pipelines benchmarks tools

format: $(STAMP)
	ruff check --fix src tests pipelines benchmarks tools
	ruff format src tests pipelines benchmarks tools

clean:
	rm -rf results reports/figures mlflow.db optuna.db mlartifacts

bench: $(STAMP)
	python benchmarks/step_overhead.py
	python benchmarks/seeds_parallel.py
	python benchmarks/stacked_trials.py
	python benchmarks/device_throughput.py
	python benchmarks/published_baselines.py
