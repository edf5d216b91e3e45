# The two commands of the README: `make demo` (the demo pipeline) and `make test` (the tests).
# Both create .venv/ with the pinned packages first if it is missing or out of date.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-all bench venv clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## the main job: the whole pipeline on the built-in demo corpus (see README for the time it takes)
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

## the fast test suite (a few minutes on 2 CPU cores)
test: $(STAMP)
	$(BIN)/pytest

## the slow end-to-end tests (CI runs them too)
test-slow: $(STAMP)
	$(BIN)/pytest -m slow

test-all: test test-slow

## benchmarks against the anchors; results go to bench/results/ and the README's table
bench: $(STAMP)
	$(BIN)/python -m bench.shard
	$(BIN)/python -m bench.reader
	$(BIN)/python -m bench.features
	$(BIN)/python -m bench.kmeans
	$(BIN)/python -m bench.model
	$(BIN)/python -m bench.train

clean-venv:
	rm -rf $(VENV)
