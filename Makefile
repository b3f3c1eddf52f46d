# styletx: `make demo` and `make test` are all a newcomer needs (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
# setuptools reports every editable install as a warning ("Editable installation... be careful
# with folders named like your package"): information for packagers, noise for a newcomer.
PIP := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip
export STYLETX_CACHE ?= $(HOME)/.cache/styletx
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=

.PHONY: help venv weights proto proto-check lint test test-fast demo fleet bench system-tools clean \
	gpu-wheels gpu-weights gpu-prep container-tools image image-test deploy-test

help:
	@echo "make demo    - set up, start the server, stylize the sample images through the client"
	@echo "make test    - set up and run lint, type checks and every test"
	@echo "make image [GPU=1] - build the CPU (GPU) image with docker or podman"
	@echo "make image-test - build, then run the CPU image as Kubernetes would and test it"
	@echo "make deploy-test - build, then run the CPU overlay's manifests (and a CPU fleet) under podman kube play"
	@echo "make fleet   - a local fleet: redis-server and two replicas sharing it (Ctrl-C stops)"
	@echo "make venv | weights | proto | lint | bench | clean"
	@echo "make gpu-prep - wheels and float16 weights into .whl/ for bench/gpu_check.sh on a lent GPU"

# Two stamps: `make demo` installs only what it runs (engine, server, SDK with Pillow); the dev
# tools and the JAX backend come with `make test`. Recipes are silent: a newcomer sees what
# happens, not the commands.
$(RUNTIME_STAMP): pyproject.toml client/pyproject.toml api/pyproject.toml requirements/lock.txt
	@echo "setting up $(VENV) (first time: a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@# The engine's distribution was called `styletx` before the rename; drop an old install.
	@$(PIP) uninstall --quiet --yes styletx >/dev/null 2>&1 || true
	@$(PIP) install --quiet -c requirements/lock.txt -e ./api -e './client[pil]' -e .
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	@echo "installing the development tools into $(VENV)"
	@$(PIP) install --quiet -c requirements/lock.txt -e ./api -e './client[pil]' -e '.[dev,jax]'
	@touch $@

venv: $(DEV_STAMP)

# Real ImageNet VGG16 weights into $(STYLETX_CACHE) (once; offline-capable, see README).
weights: $(RUNTIME_STAMP)
	@$(BIN)/styletx weights fetch

proto: venv
	$(BIN)/python tools/gen_proto.py
	cd protos && ../$(BIN)/buf lint

proto-check: venv
	$(BIN)/python tools/gen_proto.py --check

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy styletx server/styletx_server client/styletx_client api/styletx_api
	cd protos && ../$(BIN)/buf lint

# Debian tools some tests use (promtool for alert rules); installed once when running as root.
system-tools:
	@bash tools/system_tools.sh

# The suite on TEST_WORKERS pytest-xdist workers (`make test TEST_WORKERS=0` runs it in one
# process). One more worker than cores: many tests wait on a server process, pip or npm.
# loadgroup keeps the tests that share a module- or class-scoped fixture in one worker;
# tests/support/parallel.py groups them and puts the slow tests first. At most 8: each worker
# holds its own TensorFlow (about 1 GB).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 8 ? n + 1 : 8 )))
test: venv weights system-tools lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# Container engine and image tools (podman, buildah, runc, mmdebstrap, ...) when missing, as root.
container-tools:
	@bash tools/system_tools.sh --containers

# IMAGE_TARGET stops at a stage of the Dockerfile (e.g. `make image GPU=1 IMAGE_TARGET=build`).
image: container-tools
	@bash tools/image.sh $(if $(GPU),gpu,cpu) $(IMAGE_TARGET)

image-test: venv image
	STYLETX_CONTAINER_TESTS=1 $(BIN)/pytest tests/container/test_image.py $(PYTEST_ARGS)

deploy-test: venv image
	STYLETX_CONTAINER_TESTS=1 $(BIN)/pytest tests/container/test_deploy.py tests/container/test_deploy_fleet.py $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/pytest -m "not slow and not real_weights" $(PYTEST_ARGS)

demo: $(RUNTIME_STAMP) weights
	@bash tools/demo.sh

fleet: $(RUNTIME_STAMP) weights
	@BIN=$(BIN) bash tools/fleet.sh

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
