"""Test helpers shared by several test modules (import as ``from helpers import ...``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import aioice.ice
import numpy as np

#: aioice's own address lookup, taken before conftest keeps ICE on loopback, for tests that
#: need the real interfaces (network namespaces). Import test helpers from here, never from
#: ``conftest``: with tests/comfyui collected too, ``conftest`` may name that folder's one.
REAL_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {predicate}")


async def async_wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def server_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("comfywhip"))


async def make_offer(
    video: int = 1, audio: int = 0, direction: str = "sendonly"
) -> tuple[object, str]:
    """A real aiortc offer (with host candidates); returns (peer connection, SDP)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from comfywhip_nb.client.sources import SineAudioTrack, TestPatternTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for _ in range(video):
        track = TestPatternTrack(64, 48) if direction != "recvonly" else None
        pc.addTransceiver(track or "video", direction=direction)
    for _ in range(audio):
        track = SineAudioTrack() if direction != "recvonly" else None
        pc.addTransceiver(track or "audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def tone_stats(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """``(rms, peak frequency in Hz)`` of float audio ``[channels, samples]`` or ``[samples]``
    (channels are mixed down); the frequency is interpolated between FFT bins."""
    mono = samples.mean(axis=0) if samples.ndim == 2 else samples
    mono = mono.astype(np.float64)
    rms = float(np.sqrt(np.mean(mono**2))) if mono.size else 0.0
    if mono.size < 16 or rms == 0.0:
        return rms, 0.0
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    peak = int(np.argmax(spectrum[1:])) + 1
    if 1 <= peak < spectrum.size - 1:  # parabolic interpolation of the peak bin
        a, b, c = spectrum[peak - 1], spectrum[peak], spectrum[peak + 1]
        peak += 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) else 0.0
    return rms, peak * rate / mono.size
