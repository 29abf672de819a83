# One command to set up and run the demo, one to set up and run the tests.
#   make demo   -> venv + CPU torch + package, then `comfywhip demo`
#   make test   -> the above + dev tools + Chromium/npm/GStreamer/nginx test deps, then ruff + pytest
#   make test-comfyui -> a test-time ComfyUI 0.3.75 + .venv-comfyui, then tests/comfyui
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch: on these machines torch==2.13.0 installs from local disk in seconds;
# an open range could pull a multi-GB CUDA build. Override with TORCH_SPEC=... elsewhere.
TORCH_SPEC ?= torch==2.13.0
DEMO_SECONDS ?= 10
# tests/comfyui run a real ComfyUI in process: they need its own venv (scripts/get-comfyui.sh)
COMFY_VENV ?= .venv-comfyui

.PHONY: setup setup-dev browser-deps gstreamer-deps network-deps comfyui-deps demo test test-comfyui lint format clean

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

comfyui-deps:
	COMFYUI_VENV=$(COMFY_VENV) bash scripts/get-comfyui.sh

test-comfyui: comfyui-deps
	$(COMFY_VENV)/bin/pytest -q -p no:cacheprovider tests/comfyui

demo: setup
	$(BIN)/comfywhip demo --duration $(DEMO_SECONDS) --out demo-out

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup-dev browser-deps gstreamer-deps network-deps lint test-comfyui
	$(BIN)/pytest -q --ignore=tests/comfyui

format: setup-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(COMFY_VENV) demo-out bench-out tests/browser/node_modules
