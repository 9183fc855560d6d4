# genreflow: `make run` (demo retraining through Airflow) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export AIRFLOW_HOME ?= $(CURDIR)/airflow-home
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GENREFLOW_HOME := $(CURDIR)

.PHONY: install run test lint mutation airflow cluster clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-weights.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-weights.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/genreflow warm-cache
	touch $@

run: install
	bash scripts/run-demo.sh

airflow: install
	bash scripts/airflow-standalone.sh

# docker-compose.yaml's deployment without docker: Postgres, Redis, moto S3, Celery x2.
cluster: install
	bash scripts/airflow-cluster.sh

test: install
	bash scripts/install-test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# The developer loop: unit and library tests, no Airflow runs, outage, browser or cluster.
test-quick: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not airflow and not outage and not browser and not cluster"

lint: install
	$(BIN)/ruff check .

# Mutation testing of storage, registry, catalog, snapshot, evaluation and the gate
# ([tool.mutmut] in pyproject.toml, docs/testing.md); slow, so not part of `make test`.
# Results: mutmut results / show NAME.
mutation: install
	rm -rf mutants
	nice -n 15 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results --all true > mutants/results.txt || true

clean:
	rm -rf var airflow-home
