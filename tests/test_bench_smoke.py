"""``comfywhip bench`` runs end to end on tiny settings and writes parseable output.

No timing asserts: benchmarks are measurements, never pass/fail criteria of the test suite
(issue 6). This only checks that the harness works: processes start, legs run against both
the raw baseline and the real WhipServer, stamps are read back, and the report is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from comfywhip_nb.bench import build_parser, settings_from_args
from comfywhip_nb.bench.stamp import read_stamp, stamp_yuv420p


def test_stamp_round_trip_plain_and_inverted() -> None:
    width, height = 160, 120
    yuv = np.full((height * 3 // 2, width), 90, dtype=np.uint8)
    stamp_yuv420p(yuv, width, height, session=3, index=4242)
    rgb = av.VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="rgb24")
    assert read_stamp(rgb) == (3, 4242)
    assert read_stamp(255 - rgb) == (3, 4242)  # ImageInvert output reads the same
    assert read_stamp(np.full_like(rgb, 128)) is None


def test_quick_settings_parse() -> None:
    args = build_parser().parse_args(["--quick", "--scenarios", "f", "--codec", "H264"])
    settings = settings_from_args(args)
    assert settings.scenarios == "af"  # (f) is computed from (a)'s legs
    assert settings.codecs == ("H264",)


def test_audio_scenario_runs_once_per_run_not_per_codec() -> None:
    from comfywhip_nb.bench.runner import count_legs

    settings = settings_from_args(build_parser().parse_args(["--scenarios", "h"]))
    assert settings.codecs == ("VP8", "H264")
    assert count_legs(settings) == 2 * settings.reps  # one A/B pair, Opus whatever the codec
    assert "h" in settings_from_args(build_parser().parse_args([])).scenarios  # in the default


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_quick_tiny_writes_json_markdown_png(tmp_path: Path) -> None:
    from comfywhip_nb.bench import main

    out = tmp_path / "bench"
    argv = ["--quick", "--out", str(out), "--scenarios", "a,d,h", "--size", "160x120"]
    argv += ["--duration", "0.5", "--warmup", "0.2", "--reps", "1", "--swap-duration", "1.2"]
    assert main(argv) == 0
    run = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 10_000
    assert "| target |" in (out / "bench.md").read_text()
    names = [c["name"] for c in run["configs"]]
    assert names == [
        "a 120p30 VP8",
        "a 120p max VP8",
        "d 120p30 hot swap VP8",
        "h audio 20 ms prompt Opus",
    ]
    for config in run["configs"]:
        assert [leg["spec"]["stack"] for leg in config["legs"]] in (
            ["baseline", "project"],
            ["project", "project"],
        )
        for leg in config["legs"]:
            assert "error" not in leg
            assert leg["frames"] > 0 and leg["p50_ms"] > 0  # stamps were read back
    audio = run["configs"][-1]["legs"]
    assert [leg["spec"]["audio"] for leg in audio] == ["passthrough", "prompt"]
    for leg in audio:  # every buffer's send time was found from its pts
        assert leg["misread"] == 0 and leg["e2e_p50_ms"] >= leg["p50_ms"]
    # the prompt's -6 dB gain ran on the audio (the passthrough leg is the tone as received)
    assert abs(20 * np.log10(audio[1]["rms"] / audio[0]["rms"]) + 6.0) < 1.0
    targets = {row["target"] for row in run["targets"]}
    assert "(f) CPU per frame ratio" in targets
    assert "(d) swap stall ms beyond control" in targets
    assert "(h) audio added latency p95 ms" in targets
    assert "(h) audio buffers dropped passthrough / prompt" in targets
