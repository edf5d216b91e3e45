# The two commands of the README: `make demo` (the demo pipeline) and `make test` (the tests).
# Both create .venv/ with the pinned packages first if it is missing or out of date.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Which FAISS build the venv holds: cpu (faiss-cpu) or gpu (faiss-gpu, CUDA 12; it runs on CPU too).
# Both install the same `faiss` module, so the venv holds one: the one it was made with (.venv/.faiss),
# cpu for a new venv; `make venv-gpu` (or any target with FAISS=gpu) swaps it.
FAISS ?= $(shell cat $(VENV)/.faiss 2>/dev/null || echo cpu)
STAMP := $(VENV)/.installed-$(FAISS)

.PHONY: demo test test-slow test-all bench venv venv-gpu gpu-check clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip uninstall --quiet --yes faiss-cpu faiss-gpu faiss-gpu-cu12 2>/dev/null || true  # one build only (see FAISS)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[$(FAISS),dev]'
	rm -f $(VENV)/.installed $(VENV)/.installed-cpu $(VENV)/.installed-gpu
	echo $(FAISS) > $(VENV)/.faiss
	touch $(STAMP)

venv: $(STAMP)

## the same venv with FAISS for GPU (faiss-gpu from PyPI) in place of faiss-cpu
venv-gpu:
	$(MAKE) venv FAISS=gpu

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

## on one CUDA GPU, in at most 8 minutes: the CUDA tests and the GPU benches (bench/gpu_check.py);
## writes bench/results/gpu.json and gpu.log. Installs FAISS for GPU into the venv first (PyPI).
## Without a GPU it runs its CPU dry run (tiny sizes) into bench/.work/gpu-dryrun.json instead.
gpu-check:
	$(MAKE) venv FAISS=gpu
	$(BIN)/python -m bench.gpu_check

clean-venv:
	rm -rf $(VENV)
