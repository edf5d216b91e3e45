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

.PHONY: demo test test-slow test-all bench venv venv-gpu gpu-check wheels-gpu clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip uninstall --quiet --yes faiss-cpu faiss-gpu faiss-gpu-cu12 2>/dev/null || true  # one build only (see FAISS)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[$(FAISS),dev,hf,s3prl]'
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

# The GPU check (bench/gpu_check.py) has two routes:
# - `make gpu-check`: builds the venv with FAISS for GPU (pip from the package index) and runs there;
# - `make gpu-check OFFLINE=1 PYTHON=python3`, for a GPU node without network: uses the interpreter that is
#   there (with bench/gpu-node-packages.txt installed) and the wheels of `make wheels-gpu` in $(WHEELS)/,
#   installed without network or venv into a temporary folder that PYTHONPATH gives to every subprocess.
# OUT=folder: where gpu.json and gpu.log go (default bench/results; a dry run's: bench/.work/gpu-dryrun.*).
# ARGS: more arguments for bench.gpu_check, e.g. ARGS=--dry-run (the CPU run at tiny sizes).
OFFLINE ?=
OUT ?=
ARGS ?=
WHEELS ?= .whl
WHEELS_PYTHON ?= 3.12
WHEEL_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
	manylinux1_x86_64
CHECK_ARGS = $(if $(OUT),--out $(OUT)/gpu.json) $(ARGS)

## on one CUDA GPU, in at most 8 minutes: the CUDA tests and the GPU benches (bench/gpu_check.py);
## writes bench/results/gpu.json and gpu.log (or into OUT). Without a GPU it runs its CPU dry run.
gpu-check:
ifeq ($(OFFLINE),1)
	@ls $(WHEELS)/*.whl >/dev/null 2>&1 || { echo "no wheels in $(WHEELS)/: run 'make wheels-gpu' on a machine with network and bring $(WHEELS)/ here"; exit 1; }
	site=$$(mktemp -d -t progre-site.XXXXXX) && trap 'rm -rf "$$site"' EXIT && \
	$(PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$$site" $(WHEELS)/*.whl && \
	PYTHONPATH="$(CURDIR):$$site$${PYTHONPATH:+:$$PYTHONPATH}" $(PYTHON) -m bench.gpu_check $(CHECK_ARGS)
else
	$(MAKE) venv FAISS=gpu
	$(BIN)/python -m bench.gpu_check $(CHECK_ARGS)
endif

## on a machine with network: the wheels that an offline GPU node lacks (bench/gpu-wheels.txt, versions of
## constraints.txt) for CPython $(WHEELS_PYTHON) on manylinux x86_64, into $(WHEELS)/; prints their size
wheels-gpu:
	mkdir -p $(WHEELS) && rm -f $(WHEELS)/*.whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(WHEELS_PYTHON) --implementation cp \
		$(addprefix --platform ,$(WHEEL_PLATFORMS)) -c constraints.txt -r bench/gpu-wheels.txt -d $(WHEELS)
	@du -cb $(WHEELS)/*.whl | tail -1 | awk -v n=$$(ls $(WHEELS)/*.whl | wc -l) \
		'{printf "$(WHEELS)/: %d wheels, %.1f MB (the node takes at most ~40 MB)\n", n, $$1 / 1e6}'

clean-venv:
	rm -rf $(VENV)
