"""The audio nodes on real sines and noise, against hand-computed expectations: decibel
arithmetic, the analog Butterworth magnitude, a sample-by-sample recursion in numpy and the
sample indices ComfyUI's formulas give. (ComfyUI's own classes: tests/comfyui/test_audio_nodes.py.)
"""

from __future__ import annotations

import fractions
import itertools
import math
from typing import Any

import av
import numpy as np
import pytest
import torch
from helpers import wait_until

from comfywhip_nb.pipeline.audio import AudioProcessor
from comfywhip_nb.prompts import PromptError, load_prompt, node_catalogue
from comfywhip_nb.prompts.nodes import BUILTIN_NODES, audio_core, audio_live
from comfywhip_nb.prompts.nodes.audio_dsp import butterworth, resample

RATE = 48000
GEN = torch.Generator().manual_seed(15)
LIVE = ("LiveAudioGain", "LiveAudioMute", "LiveAudioInvert", "LiveAudioFilter")
CORE = (
    "TrimAudioDuration",
    "SplitAudioChannels",
    "AudioConcat",
    "AudioMerge",
    "AudioAdjustVolume",
    "EmptyAudio",
)


def sine(freq: float, seconds: float = 0.5, rate: int = RATE, channels: int = 1) -> torch.Tensor:
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    wave = 0.5 * torch.sin(2 * math.pi * freq * t)
    return wave.float()[None, None].repeat(1, channels, 1)


def audio(waveform: torch.Tensor, rate: int = RATE) -> dict[str, Any]:
    return {"waveform": waveform, "sample_rate": rate}


def level_db(out: torch.Tensor, ref: torch.Tensor, skip: int = 4800) -> float:
    """Output level relative to the input, in dB, after the filter's first 100 ms."""
    return 20 * math.log10(
        out[..., skip:].pow(2).mean().sqrt() / ref[..., skip:].pow(2).mean().sqrt()
    )


def run_filter(x: torch.Tensor, mode: str, cutoff: float = 1000.0, order: int = 2) -> torch.Tensor:
    return audio_live.LiveAudioFilter().execute(audio(x), mode, cutoff, order)[0]["waveform"]


def test_audio_nodes_are_registered_with_their_categories() -> None:
    catalogue = node_catalogue()
    assert {*LIVE, *CORE} <= set(BUILTIN_NODES)
    assert {catalogue[n]["category"] for n in LIVE} == {"audio/live"}
    assert {catalogue[n]["category"] for n in CORE} == {"audio"}
    assert catalogue["LiveAudioFilter"]["input"]["required"]["mode"][0] == ["lowpass", "highpass"]


def test_gain_in_db() -> None:
    x = sine(440)
    node = audio_live.LiveAudioGain()
    up = node.execute({**audio(x), "pts": 7}, 6.0)[0]
    assert up["pts"] == 7 and up["sample_rate"] == RATE  # other keys pass through
    ratio = (up["waveform"].abs().max() / x.abs().max()).item()
    assert abs(ratio - 2.0) <= 0.02  # +6 dB is 1.995x
    down = node.execute(audio(x), -6.0)[0]["waveform"]
    assert abs(down.abs().max().item() / x.abs().max().item() - 0.5) <= 0.005
    same = node.execute(audio(x), 0.0)[0]["waveform"]
    assert torch.equal(same, x)
    assert up["waveform"].dtype == torch.float32 and up["waveform"].shape == x.shape


def test_mute_and_invert() -> None:
    x = sine(440, channels=2)
    muted = audio_live.LiveAudioMute().execute(audio(x))[0]["waveform"]
    assert muted.shape == x.shape and muted.dtype == torch.float32 and not muted.any()
    assert audio_live.LiveAudioMute().execute(audio(x), mute=False)[0]["waveform"] is x
    inverted = audio_live.LiveAudioInvert().execute(audio(x))[0]["waveform"]
    assert torch.equal(inverted, -x)


@pytest.mark.parametrize("mode", ["lowpass", "highpass"])
def test_filter_passes_one_side_of_the_cutoff(mode: str) -> None:
    low, high = sine(200), sine(5000)
    passed, stopped = (low, high) if mode == "lowpass" else (high, low)
    assert abs(level_db(run_filter(passed, mode), passed)) <= 1.0
    assert level_db(run_filter(stopped, mode), stopped) <= -12.0
    at_cutoff = sine(1000)
    assert abs(level_db(run_filter(at_cutoff, mode), at_cutoff) + 3.01) <= 0.2


@pytest.mark.parametrize("order", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("mode", ["lowpass", "highpass"])
def test_sections_give_the_butterworth_magnitude(mode: str, order: int) -> None:
    """|H| of the bilinear Butterworth: 1 / sqrt(1 + (tan(w/2) / tan(wc/2))^(+-2N))."""
    cutoff = 1500.0
    w = np.linspace(0.01, 0.95 * math.pi, 200)
    z = np.exp(-1j * w)
    h = np.ones_like(z)
    for s in butterworth(mode, cutoff, RATE, order):
        h *= (s.b0 + s.b1 * z + s.b2 * z**2) / (1 + s.a1 * z + s.a2 * z**2)
    ratio = np.tan(w / 2) / math.tan(math.pi * cutoff / RATE)
    expected = 1 / np.sqrt(1 + ratio ** (2 * order if mode == "lowpass" else -2 * order))
    np.testing.assert_allclose(np.abs(h), expected, rtol=1e-6, atol=1e-9)


def recursion(x: np.ndarray, mode: str, cutoff: float, order: int) -> np.ndarray:
    """The cascade sample by sample (Direct Form I), the textbook way."""
    for s in butterworth(mode, cutoff, RATE, order):
        y = np.zeros_like(x)
        for n in range(x.shape[-1]):
            y[:, n] = s.b0 * x[:, n] - (s.a1 * y[:, n - 1] if n > 0 else 0)
            if n > 0:
                y[:, n] += s.b1 * x[:, n - 1]
            if n > 1:
                y[:, n] += s.b2 * x[:, n - 2] - s.a2 * y[:, n - 2]
        x = y
    return x


@pytest.mark.parametrize(
    ("mode", "cutoff", "order"), [("lowpass", 300.0, 3), ("highpass", 40.0, 2)]
)
def test_filter_equals_the_sample_by_sample_recursion(mode: str, cutoff: float, order: int) -> None:
    x = torch.randn(1, 2, 1500, generator=GEN) * 0.3
    node = audio_live.LiveAudioFilter()
    chunks = [
        node.execute(audio(x[..., i : i + 480]), mode, cutoff, order)[0]
        for i in range(0, 1500, 480)
    ]
    out = torch.cat([c["waveform"] for c in chunks], dim=-1)
    expected = recursion(x[0].double().numpy(), mode, cutoff, order)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=2e-6)


@pytest.mark.parametrize(("mode", "order"), [("lowpass", 2), ("highpass", 2), ("lowpass", 5)])
def test_filter_in_20_ms_chunks_equals_filter_whole(mode: str, order: int) -> None:
    x = sine(300, seconds=1.0, channels=2) + 0.1 * torch.randn(1, 2, RATE, generator=GEN)
    whole = run_filter(x, mode, 800.0, order)
    node = audio_live.LiveAudioFilter()
    step = RATE // 50  # 20 ms
    chunked = torch.cat(
        [
            node.execute(audio(x[..., i : i + step]), mode, 800.0, order)[0]["waveform"]
            for i in range(0, RATE, step)
        ],
        dim=-1,
    )
    assert torch.allclose(chunked, whole, atol=1e-5)
    ragged = audio_live.LiveAudioFilter()  # uneven chunks, a one-sample one among them
    bounds = [0, 1, 2, 17, 960, 3000, 3001, 20000, RATE]
    parts = [
        ragged.execute(audio(x[..., a:b]), mode, 800.0, order)[0]["waveform"]
        for a, b in itertools.pairwise(bounds)
    ]
    assert torch.allclose(torch.cat(parts, dim=-1), whole, atol=1e-5)


def test_filter_starts_afresh_when_the_rate_or_channels_change() -> None:
    node = audio_live.LiveAudioFilter()
    loud = torch.ones(1, 1, 960)
    node.execute(audio(loud), "highpass", 100.0, 2)
    x = torch.randn(1, 1, 960, generator=GEN)
    other_rate = node.execute(audio(x, 44100), "highpass", 100.0, 2)[0]["waveform"]
    fresh = audio_live.LiveAudioFilter().execute(audio(x, 44100), "highpass", 100.0, 2)[0]
    assert torch.equal(other_rate, fresh["waveform"])
    stereo = x.repeat(1, 2, 1)
    out = node.execute(audio(stereo, 44100), "highpass", 100.0, 2)[0]["waveform"]
    fresh = audio_live.LiveAudioFilter().execute(audio(stereo, 44100), "highpass", 100.0, 2)[0]
    assert torch.equal(out, fresh["waveform"])
    bad = node.execute(audio(stereo.clone().fill_(float("nan")), 44100), "highpass", 100.0, 2)
    assert bad[0]["waveform"].isnan().all()  # a broken chunk does not poison the next
    out = node.execute(audio(stereo, 44100), "highpass", 100.0, 2)[0]["waveform"]
    assert torch.equal(out, fresh["waveform"])
    # a cutoff above Nyquist is capped, not an error
    capped = node.execute(audio(stereo, 16000), "lowpass", 24000.0, 2)[0]["waveform"]
    assert capped.shape == stereo.shape and torch.isfinite(capped).all()


def test_trim_follows_comfyuis_sample_arithmetic() -> None:
    x = torch.arange(1000, dtype=torch.float32)[None, None]
    trim = audio_core.TrimAudioDuration().trim
    out = trim(audio(x, 100), 1.5, 2.0)[0]["waveform"]
    assert torch.equal(out[0, 0], torch.arange(150, 350, dtype=torch.float32))
    out = trim(audio(x, 100), -2.0, 1.0)[0]["waveform"]  # from the end
    assert out[0, 0, 0] == 800 and out.shape[-1] == 100
    assert trim(audio(x, 100), 0.0, 60.0)[0]["waveform"].shape[-1] == 1000  # clamped
    with pytest.raises(ValueError, match="Start time"):
        trim(audio(x, 100), 3.0, 0.0)


def test_split_concat_merge_volume_and_empty() -> None:
    left, right = sine(300), sine(700)
    stereo = torch.cat([left, right], dim=1)
    a, b = audio_core.SplitAudioChannels().separate(audio(stereo))
    assert torch.equal(a["waveform"], left) and torch.equal(b["waveform"], right)
    with pytest.raises(ValueError, match="one channel"):
        audio_core.SplitAudioChannels().separate(audio(left))

    concat = audio_core.AudioConcat().concat
    out = concat(audio(left[..., :100]), audio(right[..., :50]), "before")[0]["waveform"]
    assert out.shape == (1, 2, 150)  # mono became stereo
    assert torch.equal(out[:, 0, :50], right[:, 0, :50]) and torch.equal(
        out[:, 1, 50:], left[0, :, :100]
    )
    mixed = concat(audio(left[..., :240], 24000), audio(right[..., :100]), "after")[0]
    assert mixed["sample_rate"] == RATE and mixed["waveform"].shape == (1, 2, 580)  # 240 -> 480

    merge = audio_core.AudioMerge().merge
    one, two = torch.full((1, 1, 8), 0.25), torch.full((1, 1, 4), 0.5)
    assert torch.allclose(
        merge(audio(one), audio(two), "add")[0]["waveform"][0, 0, :4], torch.tensor(0.75)
    )
    added = merge(audio(one), audio(two), "add")[0]["waveform"]
    assert added.shape == one.shape and torch.allclose(added[..., 4:], one[..., 4:])  # zero-padded
    assert torch.allclose(
        merge(audio(one), audio(two), "mean")[0]["waveform"][..., :4], torch.tensor(0.375)
    )
    assert torch.allclose(
        merge(audio(one), audio(two), "subtract")[0]["waveform"][..., :4], torch.tensor(-0.25)
    )
    assert torch.allclose(
        merge(audio(one), audio(two), "multiply")[0]["waveform"][..., :4], torch.tensor(0.125)
    )
    loud = merge(audio(torch.full((1, 1, 4), 0.9)), audio(torch.full((1, 1, 2), 0.9)), "add")[0]
    assert torch.allclose(loud["waveform"], torch.tensor([[[1.0, 1.0, 0.5, 0.5]]]))  # peak -> 1

    volume = audio_core.AudioAdjustVolume()
    given = audio(left)
    assert volume.adjust_volume(given, 0)[0] is given
    louder = volume.adjust_volume(given, 6)[0]["waveform"]
    assert torch.allclose(louder, left * 10 ** (6 / 20))
    assert volume.INPUT_TYPES()["required"]["volume"][1]["default"] == 1

    empty = audio_core.EmptyAudio(device="cpu")
    out = empty.create_empty_audio(0.5, 44100, 2)[0]
    assert out["sample_rate"] == 44100 and out["waveform"].shape == (1, 2, 22050)
    assert out["waveform"].dtype == torch.float32 and not out["waveform"].any()
    with pytest.raises(ValueError, match="positive"):
        empty.create_empty_audio(1.0, 0, 2)
    with pytest.raises(ValueError, match="more than"):
        empty.create_empty_audio(1e9, 48000, 2)


def test_resample_keeps_a_sine() -> None:
    x = sine(1000, seconds=0.1, rate=44100)
    out = resample(x, 44100, RATE)
    assert out.shape[-1] == math.ceil(x.shape[-1] * 160 / 147)
    expected = sine(1000, seconds=0.1, rate=RATE)[..., : out.shape[-1]]
    assert (out - expected)[..., 200:-200].abs().max() < 2e-3  # edges see the zero padding
    assert resample(x, 44100, 44100) is x
    with pytest.raises(ValueError, match="kernel"):
        resample(x, 44101, 48000)


def graph(*middle: tuple[str, dict[str, Any]], buffer_ms: float = 20.0) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": buffer_ms}}
    }
    for i, (class_type, inputs) in enumerate(middle, start=2):
        nodes[str(i)] = {"class_type": class_type, "inputs": {"audio": [str(i - 1), 0], **inputs}}
    last = str(len(nodes))
    nodes[str(len(nodes) + 1)] = {"class_type": "SaveAudioTensor", "inputs": {"audio": [last, 0]}}
    return nodes


def test_prompt_runs_gain_on_audio() -> None:
    prompt = load_prompt([graph(("LiveAudioGain", {"gain_db": 6.0}))], device="cpu")
    x = sine(440)
    out = prompt.run_audio(audio(x))
    assert out["sample_rate"] == RATE and out["waveform"].shape == x.shape
    assert abs(out["waveform"].abs().max().item() / x.abs().max().item() - 2.0) <= 0.02
    with pytest.raises(PromptError, match="gain_db"):
        load_prompt(graph(("LiveAudioGain", {"gain_db": 99.0})))


def test_prompt_keeps_filter_state_between_chunks() -> None:
    steps = [
        ("LiveAudioFilter", {"mode": "lowpass", "cutoff_hz": 500.0, "order": 4}),
        ("AudioAdjustVolume", {"volume": -6}),
        ("LiveAudioInvert", {}),
    ]
    prompt = load_prompt(graph(*steps), device="cpu")
    x = torch.randn(1, 1, RATE // 2, generator=GEN) * 0.2
    step = RATE // 50
    chunked = torch.cat(
        [
            prompt.run_audio(audio(x[..., i : i + step]))["waveform"]
            for i in range(0, x.shape[-1], step)
        ],
        dim=-1,
    )
    expected = -run_filter(x, "lowpass", 500.0, 4) * 10 ** (-6 / 20)
    assert torch.allclose(chunked, expected, atol=1e-5)


def test_audio_processor_filters_a_stream_without_seams() -> None:
    """The session's audio worker: 20 ms s16 frames in, 100 ms buffers through the filter; the
    buffers join as the whole signal filtered at once (a reset would leave a transient). One
    buffer's frames at a time, so the worker never falls behind and drops one."""
    frames, samples, per_buffer = 50, 960, 5
    t = np.arange(frames * samples) / RATE
    ints = (np.sin(2 * np.pi * 440 * t) * 0.5 * 32767).astype(np.int16)
    chunks: list[Any] = []
    processor = AudioProcessor("nodes", frame_timeout=5.0, on_processed=chunks.append)
    steps = ("LiveAudioFilter", {"mode": "lowpass", "cutoff_hz": 1000.0, "order": 2})
    processor.set_prompt(load_prompt(graph(steps, buffer_ms=100.0), device="cpu"), 1)
    processor.start()
    try:
        for i in range(frames):
            part = ints[i * samples : (i + 1) * samples]
            frame = av.AudioFrame.from_ndarray(np.repeat(part, 2)[None], "s16", "stereo")
            frame.sample_rate, frame.time_base = RATE, fractions.Fraction(1, RATE)
            frame.pts = i * samples
            processor.submit(frame)
            if (i + 1) % per_buffer == 0:
                done = (i + 1) // per_buffer
                wait_until(lambda done=done: processor.stats().buffers_processed >= done, 30)
    finally:
        processor.stop()
    assert processor.stats().buffers_dropped == 0 and processor.stats().last_error is None
    out = np.concatenate([c.samples for c in chunks], axis=1)
    x = torch.from_numpy(ints.astype(np.float32) / 32768)[None, None]
    expected = run_filter(x, "lowpass", 1000.0, 2)[0].numpy()
    assert out.shape == expected.shape == (1, frames * samples)
    assert np.abs(out - expected).max() < 1e-4
