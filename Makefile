# dsa110-assets: the two commands are `make demo` and `make test`; both run `make setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

DEBIAN_PACKAGES := wsclean casacore-tools postgresql
# The Dagster instance of `make demo` (SQLite inside it) and of `make postgres`.
DAGSTER_HOME_DEMO := $(CURDIR)/state/run/dagster_home
# `make postgres`: a local PostgreSQL server for the production storage (deploy/).
PG_DIR ?= $(CURDIR)/state/run/pg
PG_HOME ?= $(CURDIR)/state/run/dagster_home_pg
DAGSTER_PG_HOST ?= 127.0.0.1
DAGSTER_PG_PORT ?= 5433
DAGSTER_PG_USERNAME ?= dagster
DAGSTER_PG_DB ?= dagster
PG_BIN = $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))
# PostgreSQL refuses to run as root: as root its commands run as the `postgres` user.
PG_AS = $(shell [ "$$(id -u)" = 0 ] && echo "runuser -u postgres --")
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
VENV := .venv
BIN := $(VENV)/bin
# CASA (the second oracle of tests/test_casa.py) in its own environment, never in .venv.
CASA_VENV := .venv-casa
CASA_REQUIREMENTS := tests/casa/requirements.txt
UV = $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup demo test lint bench bench-pipeline postgres postgres-stop deploy-check

help:
	@echo "make demo   simulate observations and run the pipeline in dagster dev (runs setup first)"
	@echo "make test   run the test suite and lint (runs setup first)"
	@echo "make setup  install uv, Debian packages ($(DEBIAN_PACKAGES)), the locked venv and"
	@echo "            the CASA test environment $(CASA_VENV) ($(CASA_REQUIREMENTS))"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make bench-pipeline  latency and backlog through the real deployment (~1.5 h)"
	@echo "make postgres       start a local PostgreSQL server in state/run/pg (port"
	@echo "                    DAGSTER_PG_PORT=$(DAGSTER_PG_PORT)) and a DAGSTER_HOME on it in"
	@echo "                    state/run/dagster_home_pg (deploy/dagster.postgres.yaml)"
	@echo "make postgres-stop  stop that server"
	@echo "make deploy-check   validate dagster.yaml, deploy/dagster.postgres.yaml (against the"
	@echo "                    server in DAGSTER_PG_*) and the systemd units in deploy/systemd"

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
	@mkdir -p $(DAGSTER_HOME_DEMO)
	@cp dagster.yaml $(DAGSTER_HOME_DEMO)/dagster.yaml
	@echo "demo: simulating 3 observations with interference (the first on a 3C286 transit), one every 40 s"
	@echo "demo: Dagster UI at http://127.0.0.1:3000 -- watch incoming_sensor and the runs;"
	@echo "demo: status API at http://127.0.0.1:8000/api/docs (/api/status, /metrics; log state/logs/demo-api.log)"
	@echo "demo: press Ctrl-C to stop (the data stay in data/ and state/ for the next run)"
	@$(BIN)/dsa110 catalog calibrators --build > /dev/null
	@rm -f state/catalogs/simulation/sky_catalog_nvss.csv
	@$(BIN)/dsa110 simulate --groups 3 --antennas 32 --channels 8 --rfi --continue --interval 40 \
	  > state/logs/demo-simulate.log 2>&1 &
	@# The simulated sky is the demo's survey catalog: load it as NVSS as soon as it is written.
	@(for i in $$(seq 120); do [ -f state/catalogs/simulation/sky_catalog_nvss.csv ] && break; \
	  sleep 1; done; $(BIN)/dsa110 catalog ingest --survey nvss \
	  state/catalogs/simulation/sky_catalog_nvss.csv) > state/logs/demo-catalog.log 2>&1 &
	@# The status API beside Dagster, stopped with it (Ctrl-C, or dagster dev exiting).
	@$(BIN)/dsa110 serve --host 127.0.0.1 --port 8000 --dagster-url http://127.0.0.1:3000 \
	  > state/logs/demo-api.log 2>&1 & api=$$!; \
	trap 'kill $$api 2>/dev/null || true; wait $$api 2>/dev/null || true' EXIT INT TERM; \
	DAGSTER_HOME=$(DAGSTER_HOME_DEMO) $(BIN)/dagster dev -w workspace.yaml \
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
	@$(BIN)/python bench/partitions.py
	@$(BIN)/python bench/flagging.py --image
	@$(BIN)/python bench/api.py

# The end-to-end figures of issue 15 through the real deployment (about 1.5 h on 2 cores):
# latency last file -> image for the current path and the baseline, then a 6-group backlog.
bench-pipeline: setup
	@$(BIN)/python bench/pipeline.py
	@$(BIN)/python bench/throughput.py

# A local PostgreSQL cluster owned by `postgres` (password in state/run/pg/password), the
# database DAGSTER_PG_DB for role DAGSTER_PG_USERNAME, and state/run/dagster_home_pg with
# deploy/dagster.postgres.yaml plus an env file to source: `set -a; . state/run/pg/dagster.env`.
postgres: setup
	@mkdir -p $(PG_DIR) $(PG_HOME)
	@[ -n "$(PG_AS)" ] && chown postgres: $(PG_DIR) || true
	@chmod 700 $(PG_DIR)
	@[ -s $(PG_DIR)/password ] || (umask 077; $(BIN)/python -c \
	  "import secrets; print(secrets.token_hex(16))" > $(PG_DIR)/password)
	@if [ ! -f $(PG_DIR)/data/PG_VERSION ]; then \
	  echo "postgres: initdb $(PG_DIR)/data"; \
	  $(PG_AS) $(PG_BIN)/initdb -D $(PG_DIR)/data -U postgres -E UTF8 \
	    --auth-local=trust --auth-host=scram-sha-256 > $(PG_DIR)/initdb.log; fi
	@if $(PG_AS) $(PG_BIN)/pg_ctl -D $(PG_DIR)/data status > /dev/null 2>&1; then \
	  echo "postgres: already running"; else \
	  $(PG_AS) $(PG_BIN)/pg_ctl -D $(PG_DIR)/data -l $(PG_DIR)/server.log -w \
	    -o "-c listen_addresses=$(DAGSTER_PG_HOST) -p $(DAGSTER_PG_PORT) -k $(PG_DIR)" start; fi
	@pw=$$(cat $(PG_DIR)/password); \
	$(PG_AS) $(PG_BIN)/psql -h $(PG_DIR) -p $(DAGSTER_PG_PORT) -U postgres -d postgres -qtA \
	  -v ON_ERROR_STOP=1 -c "SELECT 1 FROM pg_roles WHERE rolname = '$(DAGSTER_PG_USERNAME)'" \
	  | grep -q 1 || $(PG_AS) $(PG_BIN)/psql -h $(PG_DIR) -p $(DAGSTER_PG_PORT) -U postgres \
	  -d postgres -q -v ON_ERROR_STOP=1 \
	  -c "CREATE ROLE \"$(DAGSTER_PG_USERNAME)\" LOGIN PASSWORD '$$pw'"; \
	$(PG_AS) $(PG_BIN)/psql -h $(PG_DIR) -p $(DAGSTER_PG_PORT) -U postgres -d postgres -qtA \
	  -c "SELECT 1 FROM pg_database WHERE datname = '$(DAGSTER_PG_DB)'" | grep -q 1 || \
	  $(PG_AS) $(PG_BIN)/psql -h $(PG_DIR) -p $(DAGSTER_PG_PORT) -U postgres -d postgres -q \
	  -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$(DAGSTER_PG_DB)\" OWNER \"$(DAGSTER_PG_USERNAME)\""; \
	(umask 077; printf '%s\n' "DAGSTER_PG_HOST=$(DAGSTER_PG_HOST)" \
	  "DAGSTER_PG_PORT=$(DAGSTER_PG_PORT)" "DAGSTER_PG_USERNAME=$(DAGSTER_PG_USERNAME)" \
	  "DAGSTER_PG_PASSWORD=$$pw" "DAGSTER_PG_DB=$(DAGSTER_PG_DB)" \
	  "DAGSTER_HOME=$(PG_HOME)" > $(PG_DIR)/dagster.env)
	@cp deploy/dagster.postgres.yaml $(PG_HOME)/dagster.yaml
	@echo "postgres: running on $(DAGSTER_PG_HOST):$(DAGSTER_PG_PORT), database $(DAGSTER_PG_DB);"
	@echo "postgres: use it with: set -a; . $(PG_DIR)/dagster.env; set +a"

postgres-stop:
	@if [ -f $(PG_DIR)/data/PG_VERSION ]; then \
	  $(PG_AS) $(PG_BIN)/pg_ctl -D $(PG_DIR)/data -m fast -w stop || true; fi

# Validates the instance configs (each loaded as Dagster loads it; the PostgreSQL one against
# the server in DAGSTER_PG_*, or in state/run/pg/dagster.env after `make postgres`) and the
# systemd units (systemd-analyze verify), without starting anything.
deploy-check: setup
	@if [ -z "$${DAGSTER_PG_PASSWORD:-}" ] && [ -f $(PG_DIR)/dagster.env ]; then \
	  set -a; . $(PG_DIR)/dagster.env; set +a; fi; \
	$(BIN)/python deploy/check.py
