# Everyday targets. `make check` is what CI runs before the tests (see .ci/run).
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: install test test-fast lint fmt typecheck check snapshot schema validate dev bench

install:  ## a venv with the project and its test tools
	python3.11 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q -e retl_dagster_tests/plugin_sample  # the sample destination plugin

test:  ## the README's test command, with the servers its tests need (as .ci/run starts them)
	RETL_TEST_PG_URL="$$(bash .ci/start_postgres.sh)" \
	RETL_TEST_SNOWFLAKE_URL="$$(bash .ci/start_fakesnow.sh)" \
	RETL_TEST_S3_URL="$$(bash .ci/start_moto.sh)" \
	$(PY) -m pytest -q

test-fast:  ## engine, config and destination tests only
	$(PY) -m pytest -q retl_dagster_tests/engine retl_dagster_tests/destinations retl_dagster_tests/contracts

lint:  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt:  ## apply ruff's fixes and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck:  ## mypy (strict for engine/ and destinations/, see pyproject.toml)
	$(BIN)/mypy retl_dagster

check: lint typecheck validate

snapshot:  ## rewrite the definitions snapshot after an intended change, then commit it
	RETL_UPDATE_SNAPSHOTS=1 $(PY) -m pytest -q retl_dagster_tests/test_snapshot.py

schema:  ## rewrite the components' JSON schema (editor completion) after a change to a component
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg utils generate-component-schema --output-path docs/schema/components.schema.json

validate:  ## the code location loads (as CI checks it), and dg sees every declaration
	$(PY) -c "from retl_dagster.definitions import ensure_dbt_manifest; ensure_dbt_manifest()"
	$(BIN)/dagster definitions validate -w workspace.yaml
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg check defs

dev:  ## the Dagster UI on http://127.0.0.1:3000
	$(BIN)/dagster dev -w workspace.yaml

bench:  ## benchmarks by hand; results go to BENCHMARKS.md
	$(PY) benchmarks/side_by_side.py
