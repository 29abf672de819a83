"""Execute every notebook headless (nbclient) and check the saved widget state.

The notebooks carry their own assert cells; here we also check that the widget state saved
with ``store_widget_state=True`` holds a real preview frame: the preview image is only ever
set by the dashboard's background refresher, so a JPEG frame there (not the placeholder)
shows that the background thread's updates reached the front-end protocol.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from comfywhip_nb.widgets.preview import placeholder_jpeg

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return nb


def widget_state(nb: nbformat.NotebookNode) -> dict[str, Any]:
    return nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def preview_images(nb: nbformat.NotebookNode) -> list[bytes]:
    """Saved ``value`` buffers of every FramePreview's processed image."""
    found = []
    for model in widget_state(nb).values():
        state = model["state"]
        if "comfywhip-preview-image" in state.get("_dom_classes", ()):
            for buffer in model.get("buffers", ()):
                if buffer["path"] == ["value"]:
                    found.append(base64.b64decode(buffer["data"]))
    return found


def test_there_are_three_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_prompt_playground.ipynb",
        "03_whip_step_by_step.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    nb = execute(path)
    errors = [
        out for cell in nb.cells for out in cell.get("outputs", ()) if out.output_type == "error"
    ]
    assert errors == []
    if path.name == "02_prompt_playground.ipynb":
        images = preview_images(nb)
        assert images, "no preview image in the saved widget state"
        frame = images[-1]
        assert frame[:2] == b"\xff\xd8" and frame != placeholder_jpeg()
        width, _height = Image.open(io.BytesIO(frame)).size
        assert 0 < width <= 640
    if path.name == "01_quickstart.ipynb":
        players = [
            m["state"] for m in widget_state(nb).values() if "server_url" in m.get("state", {})
        ]
        # the WHEP player's model, pointing at the notebook's server (no browser here to play)
        assert players and players[0]["server_url"].startswith("http://127.0.0.1:")
        statuses = [
            m["state"].get("value", "")
            for m in widget_state(nb).values()
            if m["model_name"] == "HTMLModel"
        ]
        assert any("connected" in s for s in statuses)  # a session table row, set by the refresher
        # the audio section: the dashboard's player holds a WAV of the processed tone
        wavs = [
            base64.b64decode(buffer["data"])
            for m in widget_state(nb).values()
            if m["model_name"] == "AudioModel"
            for buffer in m.get("buffers", ())
            if buffer["path"] == ["value"]
        ]
        assert wavs and wavs[-1][:4] == b"RIFF" and wavs[-1][8:12] == b"WAVE"
