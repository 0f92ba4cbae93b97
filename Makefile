# pcm-twin: every target creates or reuses the local virtualenv (.venv) and installs exactly
# what it needs from the pinned locks. Stamps make a second run install nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
SCENARIO ?= scenarios/paper_mnist_selfcorrect.yaml
# two pytest-xdist workers (2 cores); the slow tests start first (tests/conftest.py)
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: run test bench bench-study lint format protos setup setup-dev apt-deps data clean

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

# Debian packages, installed when missing and possible (as root with apt-get, as in CI; one
# `apt-get update` and one install for all that is missing); elsewhere a warning, and what
# needs a package says so when it is used (the resnet32 workload's loader names its package,
# the browser tests are skipped). One target for every such need: add your package to a list.
# APT_RUN: what runs need (Fashion-MNIST for the resnet32 workload); APT_TEST: what only the
# tests need (Chromium and its driver for the browser tests, tests/browser.py).
APT_RUN  := dataset-fashion-mnist
APT_TEST := chromium chromium-driver
APT_PACKAGES ?= $(APT_RUN)

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "apt-get install$$missing (log: /tmp/pcm-twin-apt.log)"; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; } \
	    >/tmp/pcm-twin-apt.log 2>&1 || echo "warning: apt-get could not install$$missing" >&2; \
	else echo "warning: not installed:$$missing (apt-get install as root)" >&2; fi

# the packages runs need (also part of run, test and bench)
data: apt-deps

test: APT_PACKAGES = $(APT_RUN) $(APT_TEST)

run: setup apt-deps
	$(BIN)/pcm-twin run $(SCENARIO)

test: setup-dev apt-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup-dev apt-deps
	$(BIN)/python -m bench

# scenarios/joshi_resnet32.yaml end to end from a cold cache (55 minutes of two quiet cores,
# measured 2026-12-01; longer than the rest of `make bench`): the resnet32_study_wall record
bench-study: setup-dev apt-deps
	PCM_TWIN_BENCH_STUDY=1 $(BIN)/python -m bench resnet32

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
