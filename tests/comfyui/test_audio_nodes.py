"""The audio nodes against ComfyUI 0.3.75: the core ones' INPUT_TYPES and results next to
ComfyUI's own classes on the same inputs, ComfyUI's AudioAdjustVolume and our LiveAudio nodes
through the ComfyUI engine's ``run_audio``, and no ComfyUI node named ``LiveAudio*``."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import parity_support

from comfywhip_nb.prompts.nodes import BUILTIN_DISPLAY_NAMES, BUILTIN_NODES, audio_live
from comfywhip_nb.prompts.nodes.audio_dsp import resample
from comfywhip_nb.prompts.registry import entry_kind

pytestmark = pytest.mark.timeout(240)
RATE = 48000
Inputs = Callable[[torch.Generator], dict[str, Any]]


def wave(gen: torch.Generator, channels: int = 2, samples: int = 800) -> torch.Tensor:
    return torch.rand(1, channels, samples, generator=gen) * 2 - 1


def one(channels: int = 2, samples: int = 800, rate: int = 8000) -> Inputs:
    return lambda g: {"audio": {"waveform": wave(g, channels, samples), "sample_rate": rate}}


def two(
    c1: int = 2,
    n1: int = 800,
    c2: int = 2,
    n2: int = 800,
    scale: float = 1.0,
    rates: tuple[int, int] = (RATE, RATE),
) -> Inputs:
    def make(g: torch.Generator) -> dict[str, Any]:
        return {
            "audio1": {"waveform": wave(g, c1, n1) * scale, "sample_rate": rates[0]},
            "audio2": {"waveform": wave(g, c2, n2) * scale, "sample_rate": rates[1]},
        }

    return make


def nothing(g: torch.Generator) -> dict[str, Any]:
    return {}


#: (widgets, inputs) per node; two rates: ComfyUI resamples with torchaudio, we with our own.
CASES: dict[str, list[tuple[dict[str, Any], Inputs]]] = {
    "TrimAudioDuration": [
        ({"start_index": 0.0, "duration": 60.0}, one()),
        ({"start_index": 0.013, "duration": 0.05}, one()),
        ({"start_index": -0.05, "duration": 0.02}, one(1)),
        ({"start_index": 0.2, "duration": 0.01}, one()),  # past the end: the last sample
        ({"start_index": 0.0, "duration": 0.0}, one()),  # both raise
    ],
    "SplitAudioChannels": [({}, one()), ({}, one(1))],
    "AudioConcat": [
        ({"direction": "after"}, two(1, 300, 2, 500)),
        ({"direction": "before"}, two(2, 700, 1, 100)),
        ({"direction": "after"}, two(1, 441, 2, 480, rates=(44100, RATE))),
        ({"direction": "before"}, two(2, 900, 2, 300, rates=(RATE, 16000))),
    ],
    "AudioMerge": [
        *[({"merge_method": m}, two(n2=500)) for m in ["add", "mean", "subtract", "multiply"]],
        ({"merge_method": "add"}, two(1, 400, 1, 900)),
        ({"merge_method": "mean"}, two(2, 900, 1, 400, scale=3.0)),
        ({"merge_method": "add"}, two(2, 960, 2, 882, rates=(RATE, 44100))),
        ({"merge_method": "subtract"}, two(1, 300, 1, 960, rates=(16000, RATE))),
    ],
    "AudioAdjustVolume": [({"volume": v}, one()) for v in [1, 0, 6, -100, 100]],
    "EmptyAudio": [
        ({"duration": 60.0, "sample_rate": 44100, "channels": 2}, nothing),
        ({"duration": 0.37, "sample_rate": 8000, "channels": 1}, nothing),
    ],
}


@pytest.fixture(scope="module")
def comfy_audio() -> dict[str, type]:
    return parity_support.comfyui_audio_nodes()


def test_every_core_audio_node_has_cases(comfy_audio: dict[str, type]) -> None:
    core = {n for n, c in BUILTIN_NODES.items() if c.CATEGORY == "audio"}
    assert core == set(CASES) == set(comfy_audio)


def normalise(spec: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind, options = entry_kind(entry)
            widget = {k: options[k] for k in ("default", "min", "max", "step") if k in options}
            out[name] = {"section": section, "kind": kind, **widget}
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_input_types_and_outputs_match(comfy_audio: dict[str, type], name: str) -> None:
    ours, theirs = BUILTIN_NODES[name], comfy_audio[name]
    assert normalise(ours.INPUT_TYPES()) == normalise(theirs.INPUT_TYPES())
    assert tuple(ours.RETURN_TYPES) == tuple(theirs.RETURN_TYPES)
    assert getattr(ours, "RETURN_NAMES", None) == getattr(theirs, "RETURN_NAMES", None)
    assert ours.FUNCTION == theirs.FUNCTION and ours.CATEGORY == theirs.CATEGORY
    assert BUILTIN_DISPLAY_NAMES[name] == parity_support.display_names()[name]


def clone(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in value.items()}
    return value


def outcome(run: Callable[[], Any]) -> Any:
    try:
        return tuple(run())
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("name", "index"), [(n, i) for n, cases in sorted(CASES.items()) for i in range(len(cases))]
)
def test_results_match(comfy_audio: dict[str, type], name: str, index: int) -> None:
    widgets, inputs = CASES[name][index]
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}{index}".encode()))
    kwargs = {**inputs(gen), **widgets}
    theirs_cls, ours_cls = comfy_audio[name], BUILTIN_NODES[name]
    theirs = outcome(
        lambda: parity_support.run_comfyui(theirs_cls, {k: clone(v) for k, v in kwargs.items()})
    )
    node = ours_cls(device="cpu") if getattr(ours_cls, "STREAM_DEVICE", False) else ours_cls()
    fn = getattr(node, ours_cls.FUNCTION)
    ours = outcome(lambda: fn(**{k: clone(v) for k, v in kwargs.items()}))
    if isinstance(theirs, Exception) or isinstance(ours, Exception):
        assert type(ours) is type(theirs), f"ComfyUI: {theirs!r}, ours: {ours!r}"
        return
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a["sample_rate"] == b["sample_rate"]
        assert a["waveform"].shape == b["waveform"].shape
        assert a["waveform"].dtype == b["waveform"].dtype == torch.float32
        assert torch.allclose(a["waveform"], b["waveform"], atol=1e-6), f"{name} {widgets}"


@pytest.mark.parametrize(("orig", "new"), [(44100, 48000), (48000, 44100), (8000, 48000)])
def test_resampler_matches_torchaudio(orig: int, new: int) -> None:
    import torchaudio

    x = wave(torch.Generator().manual_seed(orig), 2, 1237)
    expected = torchaudio.functional.resample(x, orig, new)
    assert torch.allclose(resample(x, orig, new), expected, atol=1e-5)


def audio_graph(*middle: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 20.0}}
    }
    for i, (class_type, inputs) in enumerate(middle, start=2):
        nodes[str(i)] = {"class_type": class_type, "inputs": {"audio": [str(i - 1), 0], **inputs}}
    nodes[str(len(nodes) + 1)] = {
        "class_type": "SaveAudioTensor",
        "inputs": {"audio": [str(len(nodes)), 0]},
    }
    return nodes


def test_comfyui_engine_runs_comfyuis_adjust_volume(
    comfy_engine: Any, comfy_audio: dict[str, type]
) -> None:
    import nodes  # ComfyUI's, as the engine sees it

    used = nodes.NODE_CLASS_MAPPINGS["AudioAdjustVolume"]  # ComfyUI's start-up loaded it
    assert "nodes_audio" in used.__module__ and used is not BUILTIN_NODES["AudioAdjustVolume"]
    prompt = comfy_engine.load(audio_graph(("AudioAdjustVolume", {"volume": 6})))
    t = torch.arange(960) / RATE
    chunk = {
        "waveform": (0.25 * torch.sin(2 * torch.pi * 440 * t))[None, None],
        "sample_rate": RATE,
    }
    out = prompt.run_audio(chunk)
    assert out["sample_rate"] == RATE and out["waveform"].shape == (1, 1, 960)
    assert torch.allclose(out["waveform"], chunk["waveform"] * 10 ** (6 / 20), atol=1e-6)


def test_comfyui_engine_runs_live_audio_nodes_across_chunks(comfy_engine: Any) -> None:
    import nodes

    for name, cls in audio_live.NODE_CLASS_MAPPINGS.items():
        assert nodes.NODE_CLASS_MAPPINGS[name] is cls
    steps = [
        ("LiveAudioFilter", {"mode": "highpass", "cutoff_hz": 300.0, "order": 3}),
        ("LiveAudioGain", {"gain_db": 6.0}),
        ("LiveAudioInvert", {}),
    ]
    prompt = comfy_engine.load(audio_graph(*steps))
    x = torch.rand(1, 2, RATE // 4, generator=torch.Generator().manual_seed(3)) - 0.5
    step = RATE // 50  # 20 ms
    chunked = torch.cat(
        [
            prompt.run_audio({"waveform": x[..., i : i + step], "sample_rate": RATE})["waveform"]
            for i in range(0, x.shape[-1], step)
        ],
        dim=-1,
    )
    whole = audio_live.LiveAudioFilter().execute(
        {"waveform": x, "sample_rate": RATE}, "highpass", 300.0, 3
    )[0]["waveform"]
    # ComfyUI kept the filter object between runs: chunk edges join as in one pass
    assert torch.allclose(chunked, -whole * 10 ** (6 / 20), atol=1e-5)
    muted = comfy_engine.load(audio_graph(("LiveAudioMute", {"mute": True})))
    assert not muted.run_audio({"waveform": x, "sample_rate": RATE})["waveform"].any()


def test_no_comfyui_node_is_named_live_audio() -> None:
    tree = parity_support.comfyui_tree()
    if not (tree / "nodes.py").is_file():
        pytest.skip(f"no ComfyUI tree at {tree}")
    found = [
        str(path.relative_to(tree))
        for path in sorted(tree.rglob("*.py"))
        if "custom_nodes" not in path.parts and b"LiveAudio" in path.read_bytes()
    ]
    assert found == []
