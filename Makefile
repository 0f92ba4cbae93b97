# pcm-twin: every target creates or reuses the local virtualenv (.venv) and installs exactly
# what it needs from the pinned locks. Stamps make a second run install nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
SCENARIO ?= scenarios/paper_mnist_selfcorrect.yaml
PYTEST_ARGS ?=

.PHONY: run test bench lint format protos setup setup-dev data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 comes from the machine's local CPU wheel; aihwkit is installed with --no-deps
# (its metadata would pull torchvision and a second, CUDA torch). See DEVELOPERS.md.
$(VENV)/.stamp-runtime: requirements.lock pyproject.toml | $(BIN)/python
	$(PIP) install --no-deps -r requirements.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.stamp-dev: requirements-dev.lock $(VENV)/.stamp-runtime
	$(PIP) install --no-deps -r requirements-dev.lock
	@touch $@

setup: $(VENV)/.stamp-runtime
setup-dev: $(VENV)/.stamp-dev

# Data sets from Debian packages (the resnet32 workload's Fashion-MNIST): installed when missing
# and this runs as root with apt-get (CI does); otherwise a warning, and the workload's loader
# names the package when it is used.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
data:
	@if [ ! -f $(FASHION_MNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist (Fashion-MNIST for the resnet32 workload)"; \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	    || echo "warning: apt-get could not install dataset-fashion-mnist" >&2; \
	  else \
	    echo "warning: Fashion-MNIST is missing: install Debian's dataset-fashion-mnist as root" \
	         "(apt-get install dataset-fashion-mnist); the resnet32 workload needs it" >&2; \
	  fi; \
	fi

run: setup data
	$(BIN)/pcm-twin run $(SCENARIO)

test: setup-dev data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup-dev data
	$(BIN)/python -m bench

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo --no-cache

format: setup-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate pcmtwin/v1/*_pb2*.py from every protos/**/*.proto with the pinned grpcio-tools
# (requirements.lock); the generated code is committed and tests/device_twin/service checks it is fresh.
protos: setup
	$(BIN)/python -m pcmtwin.generate

clean:
	rm -rf $(VENV) results bench/out .cache .pytest_cache
