"""``comfywhip demo``: the whole path in one command, with nothing but this machine.

Starts a ``WhipServer`` on a free loopback port, publishes the built-in test pattern and a
440 Hz tone through the real WHIP path (aiortc ``WHIPClient`` -> HTTP POST -> ICE/DTLS/SRTP ->
decode -> prompt), runs a default prompt, hot-swaps a second one half way, and writes
processed PNGs, a stats timeline (JSON) and an fps/latency plot into the output folder. Each
prompt is a list of two graphs, as in ComfyStream: one on video, one on audio
(``LoadAudioTensor`` buffers 40 ms, ``SaveAudioTensor`` sends them on; the second prompt's
audio graph lowers the tone by 6 dB), so the summary shows the audio path too.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["AUDIO_GAIN", "AUDIO_PROMPT", "FIRST_PROMPT", "SECOND_PROMPT", "run_demo"]

#: the audio graphs: 40 ms buffers of the tone through the audio path (ComfyUI API format)
AUDIO_PROMPT: dict[str, Any] = {
    "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 40.0}},
    "2": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["1", 0]}},
}
AUDIO_GAIN: dict[str, Any] = {
    "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 40.0}},
    "2": {"class_type": "LiveAudioGain", "inputs": {"audio": ["1", 0], "gain_db": -6.0}},
    "3": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["2", 0]}},
}
#: ComfyUI API format, as "Save (API Format)" writes it
VIDEO_INVERT: dict[str, Any] = {
    "1": {"class_type": "LoadTensor", "inputs": {}, "_meta": {"title": "Video in"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}, "_meta": {"title": "Out"}},
}
VIDEO_BLUR_FLIP: dict[str, Any] = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 4, "sigma": 2.0}},
    "3": {
        "class_type": "ImageFlip",
        "inputs": {"image": ["2", 0], "flip_method": "y-axis: horizontally"},
    },
    "4": {"class_type": "SaveTensor", "inputs": {"images": ["3", 0]}},
}
FIRST_PROMPT: list[dict[str, Any]] = [VIDEO_INVERT, AUDIO_PROMPT]
SECOND_PROMPT: list[dict[str, Any]] = [VIDEO_BLUR_FLIP, AUDIO_GAIN]


def _plot(timeline: list[dict[str, Any]], swap_at: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p["t"] for p in timeline]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot(t, [p["fps_in"] for p in timeline], label="fps in")
    ax.plot(t, [p["fps_out"] for p in timeline], label="fps out")
    ax.set_xlabel("seconds")
    ax.set_ylabel("frames per second")
    ax2 = ax.twinx()
    ax2.plot(t, [p["latency_ms"] for p in timeline], color="tab:red", alpha=0.6, label="latency")
    audio = [p.get("audio_latency_ms", 0.0) for p in timeline]
    if any(audio):
        ax2.plot(t, audio, color="tab:purple", alpha=0.6, label="audio latency")
    ax2.set_ylabel("latency p50 (ms): video red, audio purple", color="tab:red")
    ax.axvline(swap_at, color="gray", linestyle="--", label="prompt hot-swap")
    ax.legend(loc="lower right")
    ax.set_title("comfywhip demo: test pattern through WHIP and a ComfyUI prompt")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def _publish_and_watch(server: Any, duration: float, out: Path) -> dict[str, Any]:
    from .client.whip_client import WHIPClient

    timeline: list[dict[str, Any]] = []
    saved: list[str] = []
    swap_at = duration / 2
    swapped = False
    client = WHIPClient(server.whip_url)
    await client.publish("testsrc", audio=True)  # with SineAudioTrack's 440 Hz tone
    start = time.monotonic()
    next_png = 0.5
    try:
        await client.wait_connected(timeout=15)
        while (elapsed := time.monotonic() - start) < duration:
            await asyncio.sleep(0.25)
            if not swapped and elapsed >= swap_at:
                server.set_prompts(SECOND_PROMPT)
                swapped = True
            stats = next(iter(server.stats().values()), None)
            if stats is not None:
                timeline.append({"t": round(elapsed, 2), **stats})
            if elapsed >= next_png:
                image = server.latest_frame()
                if image is not None:
                    name = f"frame_{len(saved):03d}_{'after' if swapped else 'before'}_swap.png"
                    image.save(out / name)
                    saved.append(name)
                next_png += duration / 8
    finally:
        await client.unpublish()
    return {"timeline": timeline, "pngs": saved, "swap_at": swap_at}


def _audio_summary(last: dict[str, Any]) -> dict[str, Any]:
    """The audio path at the end of the run, from the last ``/whip-stats`` snapshot."""
    ran = (
        last["audio_buffer_ms"] > 0
        and last["audio_frames_out"] > 0
        and last["audio_last_error"] is None
    )
    return {
        "frames_in": last["audio_frames_in"],
        "frames_out": last["audio_frames_out"],
        "buffers_dropped": last["audio_buffers_dropped"],
        "buffer_ms": last["audio_buffer_ms"],
        "latency_ms": last["audio_latency_ms"],
        "latency_p95_ms": last["audio_latency_p95_ms"],
        "level_in_db": last["audio_level_in_db"],
        "level_out_db": last["audio_level_out_db"],
        "sample_rate": last["audio_sample_rate"],
        "prompt_ran": ran,
        "last_error": last["audio_last_error"],
    }


def _audio_line(audio: dict[str, Any]) -> str:
    ran = "yes" if audio["prompt_ran"] else f"no ({audio['last_error'] or 'passthrough'})"
    dropped = audio["buffers_dropped"]
    return (
        f"audio ({audio['sample_rate'] / 1000:g} kHz): {audio['frames_out']} of "
        f"{audio['frames_in']} frames out ({dropped} buffer{'' if dropped == 1 else 's'} "
        f"dropped), {audio['buffer_ms']:g} ms buffer, latency p50 {audio['latency_ms']:.0f} ms"
        f" / p95 {audio['latency_p95_ms']:.0f} ms, level {audio['level_in_db']:g} dBFS in / "
        f"{audio['level_out_db']:g} dBFS out, audio prompt ran: {ran}"
    )


def run_demo(duration: float = 10.0, out: str | Path = "demo-out", port: int = 0) -> dict[str, Any]:
    """Run the demo; returns (and writes to ``out/stats.json``) a summary."""
    from .server import WhipServer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with WhipServer(port=port, prompts=FIRST_PROMPT) as server:
        print(
            f"WHIP server at {server.whip_url}; publishing the test pattern and a 440 Hz tone "
            f"for {duration:g} s"
        )
        result = asyncio.run(_publish_and_watch(server, duration, out))
    timeline = result["timeline"]
    if not timeline:
        raise RuntimeError("the demo publisher never produced stats: the session did not start")
    last = timeline[-1]
    steady = [p for p in timeline if p["t"] > 1.5]
    summary = {
        "duration_s": duration,
        "frames_in": last["frames_in"],
        "frames_processed": last["frames_processed"],
        "frames_dropped": last["frames_dropped"],
        "mean_fps_out": round(sum(p["fps_out"] for p in steady) / max(1, len(steady)), 2),
        "median_latency_ms": sorted(p["latency_ms"] for p in steady)[len(steady) // 2]
        if steady
        else None,
        "prompt_versions": sorted({p["prompt_version"] for p in timeline}),
        "last_error": last["last_error"],
        "audio": _audio_summary(last),
        "pngs": result["pngs"],
        "plot": "fps.png",
    }
    (out / "stats.json").write_text(
        json.dumps({"summary": summary, "timeline": timeline}, indent=2)
    )
    _plot(timeline, result["swap_at"], out / "fps.png")
    print(
        f"processed {summary['frames_processed']} of {summary['frames_in']} frames "
        f"({summary['frames_dropped']} dropped), mean {summary['mean_fps_out']} fps out, "
        f"median latency {summary['median_latency_ms']} ms, prompt versions "
        f"{summary['prompt_versions']} (hot-swap at {result['swap_at']:g} s)"
    )
    print(_audio_line(summary["audio"]))
    print(f"wrote {len(result['pngs'])} PNGs, stats.json and fps.png to {out}/")
    return summary
