# One command to set up and run the demo, one to set up and run the tests.
#   make demo   -> venv + CPU torch + package, then `comfywhip demo`
#   make test   -> the above + dev tools + Chromium/npm/GStreamer/nginx test deps, then ruff + pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch: on these machines torch==2.13.0 installs from local disk in seconds;
# an open range could pull a multi-GB CUDA build. Override with TORCH_SPEC=... elsewhere.
TORCH_SPEC ?= torch==2.13.0
DEMO_SECONDS ?= 10

.PHONY: setup setup-dev browser-deps gstreamer-deps network-deps demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.setup: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.setup-dev: $(VENV)/.setup pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev

browser-deps:
	bash scripts/install-browser-deps.sh

gstreamer-deps:
	bash scripts/install-gstreamer.sh

network-deps:
	bash scripts/install-network-deps.sh

demo: setup
	$(BIN)/comfywhip demo --duration $(DEMO_SECONDS) --out demo-out

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup-dev browser-deps gstreamer-deps network-deps lint
	$(BIN)/pytest -q

format: setup-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo-out bench-out tests/browser/node_modules
