# styletx: `make demo` and `make test` are all a newcomer needs (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export STYLETX_CACHE ?= $(HOME)/.cache/styletx
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=

.PHONY: help venv weights proto proto-check lint test test-fast demo bench system-tools clean \
	gpu-wheels gpu-weights gpu-prep

help:
	@echo "make demo    - set up, start the server, stylize the sample images through the client"
	@echo "make test    - set up and run lint, type checks and every test"
	@echo "make venv | weights | proto | lint | bench | clean"
	@echo "make gpu-prep - wheels and float16 weights into .whl/ for bench/gpu_check.sh on a lent GPU"

$(STAMP): pyproject.toml client/pyproject.toml requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/lock.txt -e ./client -e '.[dev,jax]'
	touch $(STAMP)

venv: $(STAMP)

# Real ImageNet VGG16 weights into $(STYLETX_CACHE) (once; offline-capable, see README).
weights: venv
	$(BIN)/styletx weights fetch

proto: venv
	$(BIN)/python tools/gen_proto.py
	cd protos && ../$(BIN)/buf lint

proto-check: venv
	$(BIN)/python tools/gen_proto.py --check

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy styletx server/styletx_server client/styletx_client
	cd protos && ../$(BIN)/buf lint

# Debian tools some tests use (promtool for alert rules); installed once when running as root.
system-tools:
	@bash tools/system_tools.sh

test: venv weights system-tools lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/pytest -m "not slow and not real_weights" $(PYTEST_ARGS)

demo: venv weights
	bash tools/demo.sh

bench: venv weights
	mkdir -p out
	$(BIN)/python bench/engine_bench.py --json out/engine_bench.json
	$(BIN)/python bench/service_bench.py --json out/service_bench.json
	$(BIN)/python bench/quality_bench.py --json out/quality_bench.json --images out/quality
	$(BIN)/python bench/precision_bench.py --part cli --part flops --part memory \
		--json out/precision_bench.json

# What bench/gpu_check.sh needs on a GPU machine that has JAX, CUDA, numpy, scipy, Pillow, h5py
# and grpcio but can download nothing: Keras and the dependencies it lacks there (namex,
# optree), pinned by the lock, as CPython $(GPU_PYTHON_VERSION) manylinux x86_64 wheels; and a
# float16 copy of the weights (~28 MiB). All in $(GPU_WHEEL_DIR), git-ignored.
GPU_PYTHON_VERSION ?= 3.12
GPU_WHEEL_DIR ?= .whl
GPU_PACKAGES := keras namex optree
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
	manylinux2014_x86_64 manylinux1_x86_64

gpu-wheels: venv
	mkdir -p $(GPU_WHEEL_DIR)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version $(GPU_PYTHON_VERSION) --implementation cp \
		$(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEEL_DIR) \
		$(foreach p,$(GPU_PACKAGES),$(shell grep -i '^$(p)==' requirements/lock.txt))
	ls -l $(GPU_WHEEL_DIR)/*.whl

gpu-weights: venv weights
	mkdir -p $(GPU_WHEEL_DIR)
	$(BIN)/styletx weights export --float16 $(GPU_WHEEL_DIR)/vgg16_notop.float16.weights.h5

gpu-prep: gpu-wheels gpu-weights

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
