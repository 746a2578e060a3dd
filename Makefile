# dsa110-assets: the two commands are `make demo` and `make test`; both run `make setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

DEBIAN_PACKAGES := wsclean casacore-tools
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
VENV := .venv
BIN := $(VENV)/bin
# CASA (the second oracle of tests/test_casa.py) in its own environment, never in .venv.
CASA_VENV := .venv-casa
CASA_REQUIREMENTS := tests/casa/requirements.txt
UV = $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup demo test lint bench

help:
	@echo "make demo   simulate observations and run the pipeline in dagster dev (runs setup first)"
	@echo "make test   run the test suite and lint (runs setup first)"
	@echo "make setup  install uv, Debian packages ($(DEBIAN_PACKAGES)), the locked venv and"
	@echo "            the CASA test environment $(CASA_VENV) ($(CASA_REQUIREMENTS))"
	@echo "make bench  run the benchmarks in bench/"

setup:
	@if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then \
	  echo "setup: installing uv from PyPI"; \
	  python3 -m pip --version >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-pip; }; \
	  python3 -m pip install -q uv 2>/dev/null || python3 -m pip install -q --break-system-packages uv; \
	fi
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@$(UV) sync --frozen --python 3.11 --quiet
	@[ -x $(CASA_VENV)/bin/python ] || $(UV) venv --python 3.11 --quiet $(CASA_VENV)
	@$(UV) pip sync --python $(CASA_VENV)/bin/python --quiet $(CASA_REQUIREMENTS)
	@mkdir -p state/db state/catalogs state/logs state/run

demo: setup
	@$(BIN)/dsa110 db init
	@mkdir -p state/run/dagster_home
	@echo "demo: simulating 3 observations (the first on a 3C286 transit), one every 40 s"
	@echo "demo: Dagster UI at http://127.0.0.1:3000 -- watch incoming_sensor and the runs;"
	@echo "demo: press Ctrl-C to stop (the data stay in data/ and state/ for the next run)"
	@$(BIN)/dsa110 catalog calibrators --build > /dev/null
	@rm -f state/catalogs/simulation/sky_catalog_nvss.csv
	@$(BIN)/dsa110 simulate --groups 3 --antennas 32 --channels 8 --continue --interval 40 \
	  > state/logs/demo-simulate.log 2>&1 &
	@# The simulated sky is the demo's survey catalog: load it as NVSS as soon as it is written.
	@(for i in $$(seq 120); do [ -f state/catalogs/simulation/sky_catalog_nvss.csv ] && break; \
	  sleep 1; done; $(BIN)/dsa110 catalog ingest --survey nvss \
	  state/catalogs/simulation/sky_catalog_nvss.csv) > state/logs/demo-catalog.log 2>&1 &
	@DAGSTER_HOME=$(CURDIR)/state/run/dagster_home $(BIN)/dagster dev -w workspace.yaml \
	  -h 127.0.0.1 -p 3000

test: setup
	@$(BIN)/python -m pytest -q
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

lint: setup
	@$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	@$(BIN)/python bench/normalize.py
	@$(BIN)/python bench/convert.py
	@$(BIN)/python bench/calibrate.py
	@$(BIN)/python bench/imaging.py
	@$(BIN)/python bench/photometry.py
	@$(BIN)/python bench/mosaic.py
	@$(BIN)/python bench/lightcurve_query.py
