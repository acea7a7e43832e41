# One way to run each chore. What CI runs (.ci/run → `make test`) is what a person runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run install install-test test lint typecheck fmt bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

## Install and start the gateway on the embedded demo (simulated providers, in-memory store).
run: install
	$(BIN)/pareto serve --config config/demo.yaml --port $(PORT)

lint: install-test
	$(BIN)/ruff check app tests

typecheck: install-test
	$(BIN)/mypy

## Lint, type-check and run every test (unit, e2e with real processes, Redis, Prometheus).
test: install-test
	$(BIN)/ruff check app tests
	$(BIN)/mypy
	$(BIN)/python -m pytest

## Gateway overhead side by side (direct vs via gateway); see README, Performance.
bench: install-test
	$(BIN)/python -m tests.benchmarks.bench_gateway --repeats 3 --workers 2

fmt: install-test
	$(BIN)/ruff format app tests
	$(BIN)/ruff check --fix app tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
