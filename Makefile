# gpu-pricer: set-up and checks. Every target creates .venv when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test test-cpu test-cudasim test-gpu lint bench bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

## serve: install the project and start the service on the CPU fallback
serve: $(VENV)/.installed
	@if [ -f api/main.py ]; then \
		GPU_PRICER_HOST=$(HOST) GPU_PRICER_PORT=$(PORT) $(BIN)/python -m api; \
	else \
		echo "api/main.py missing"; exit 1; \
	fi

## lint: ruff, mypy, and hadolint on the Dockerfiles
lint: $(STAMP)
	$(BIN)/ruff check gpu_pricer api tests bench tools
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile.cuda Dockerfile.cpu

## test: lint, the CPU suite, then the CUDA-simulator suite in its own process
test: lint test-cpu test-cudasim

test-cpu: $(STAMP)
	$(BIN)/python -m pytest -q -m "not cudasim"

test-cudasim: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -m cudasim

## test-gpu: the GPU backends on a real CUDA device (needs the gpu extra and a driver;
## skipped, not failed, without one)
test-gpu: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[gpu]'
	$(BIN)/python -m pytest -q -m gpu

## bench: the full benchmark suite; bench-quick: the same code at small sizes, under
## 5 minutes here (most of it the service bench's two kernel warm-ups)
bench: $(STAMP)
	$(BIN)/python -m bench.core --size 1000000 --repeat 15
	$(BIN)/python -m bench.kernels
	$(BIN)/python -m bench.accuracy
	$(BIN)/python -m bench.implied --repeat 7
	$(BIN)/python -m bench.book
	$(BIN)/python -m bench.service

bench-quick: $(STAMP)
	$(BIN)/python -m bench.core --size 200000 --repeat 5
	$(BIN)/python -m bench.kernels --max-size 100000 --repeat 3
	$(BIN)/python -m bench.accuracy --size 200000
	$(BIN)/python -m bench.implied --size 200000 --repeat 3 --sample 1000
	$(BIN)/python -m bench.book --size 300000
	$(BIN)/python -m bench.service --duration 2 --warmup 1 --connections 1,64 --arrow-rows 200000 --arrow-repeat 3

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
