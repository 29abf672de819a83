"""Audio in the notebook: the session table's level meters and audio stats, the AudioPlayer
widget (WAV of the processed tone), audio series in /metrics; against a real server and a
real aiortc publisher sending SineAudioTrack's 440 Hz tone."""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Iterator

import numpy as np
import pytest
from aiohttp import ClientSession
from helpers import async_wait_until, tone_stats, wait_until
from test_widgets import FakeServer

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.server import WhipServer
from comfywhip_nb.widgets import AudioPlayer, Dashboard, SessionTable, wav_bytes
from comfywhip_nb.widgets.audio_meters import FLOOR_DB, meter_value

VIDEO = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
}
AUDIO = {  # the tone 6 dB down, 40 ms at a time
    "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 40.0}},
    "2": {"class_type": "LiveAudioGain", "inputs": {"audio": ["1", 0], "gain_db": -6.0}},
    "3": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["2", 0]}},
}


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A WAV file -> float ``[channels, samples]`` and its rate (the stdlib reader)."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert wav.getsampwidth() == 2
        channels, rate = wav.getnchannels(), wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm.reshape(-1, channels).T.astype(np.float32) / 32768.0, rate


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def audio_server() -> Iterator[WhipServer]:
    srv = WhipServer(port=0, prompts=[VIDEO, AUDIO], media_timeout=10.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_wav_bytes_keeps_rate_channels_and_tone() -> None:
    stereo = np.stack([sine(440, 48000, 0.5), sine(440, 48000, 0.5, 0.25)])
    samples, rate = read_wav(wav_bytes(stereo, 48000))
    assert rate == 48000 and samples.shape == stereo.shape
    assert np.max(np.abs(samples - stereo)) < 1e-4  # int16 rounding only
    rms, freq = tone_stats(samples[:1], rate)
    assert abs(freq - 440) < 1 and abs(rms - 0.5 / np.sqrt(2)) < 0.01
    loud, _ = read_wav(wav_bytes(np.array([[2.0, -2.0, 0.0]]), 8000))  # clipped, not wrapped
    assert loud[0, 0] > 0.999 and loud[0, 1] == -1.0 and loud[0, 2] == 0.0


def test_meter_scale_is_clamped_to_minus_60_to_0() -> None:
    assert meter_value(-120.0) == FLOOR_DB and meter_value(3.0) == 0.0
    assert meter_value(-12.26) == -12.5 and meter_value(-12.2) == -12.0


def test_video_only_sessions_show_no_meters() -> None:
    fake = FakeServer()
    table = SessionTable(fake, autostart=False)
    try:
        table.tick(0.0, fake.sessions)
        meters = table.meters(fake.info.id)
        assert meters is not None and not meters.visible
    finally:
        table.close()


async def test_dashboard_meters_and_player_with_a_real_tone(audio_server: WhipServer) -> None:
    server = audio_server
    dash = Dashboard(server, mode="jpeg")
    client = WHIPClient(server.whip_url)
    try:
        await client.publish(TestPatternTrack(160, 120), audio=True)
        await client.wait_connected(timeout=10)
        ((session_id, _row),) = await async_wait_until(lambda: dash.sessions_table.rows, 10)
        meters = dash.sessions_table.meters(session_id)
        assert meters is not None

        def moving() -> bool:
            return meters.visible and meters.level_in.value > -50 and meters.level_out.value > -50

        await async_wait_until(moving, timeout=15)
        info = server.sessions[session_id]
        assert info.audio_level_in_db > -50 and info.audio_level_out_db > -50  # off -120 dB
        assert meters.level_out.value < meters.level_in.value - 3  # the graph's -6 dB
        await async_wait_until(lambda: "40 ms buffer" in meters.stats.value, timeout=5)
        assert "buffers dropped" in meters.stats.value and "p50/p95" in meters.stats.value
        assert " dB / " in meters.numbers.value

        # the player: the dropdown lists the session; a click fetches off the calling thread
        player = dash.audio
        await async_wait_until(
            lambda: any(v == session_id for _, v in player.source.options), timeout=5
        )
        await async_wait_until(lambda: server.sessions[session_id].audio_frames_out >= 60, 15)
        player.seconds.value = 1.0
        assert player.button.description == "Play last 1 s"
        assert player.click()
        assert player.wait(15) and player.clip is not None
        assert threading.current_thread().name not in player.fetched_from
        samples, rate = read_wav(player.audio.value)
        assert rate == 48000 and samples.shape == (1, 48000)
        rms, freq = tone_stats(samples, rate)
        assert abs(freq - 440) < 5  # SineAudioTrack's tone, through Opus and the graph
        assert abs(20 * np.log10(rms) - player.clip.level_db) < 0.5
        assert abs(player.clip.level_db - server.sessions[session_id].audio_level_out_db) < 3
        assert "48000 Hz" in player.status.value and "1 ch" in player.status.value
        assert player.audio.layout.display == "flex"

        # Prometheus carries the audio counters next to the video ones
        async with ClientSession() as http:
            metrics = await (await http.get(f"{server.url}/metrics")).text()
        assert f'comfywhip_audio_frames_in_total{{session="{session_id}"' in metrics
        assert "# TYPE comfywhip_audio_buffers_dropped_total counter" in metrics
        assert "comfywhip_audio_latency_p95_ms{" in metrics
        assert not dash.refresher.errors
    finally:
        await client.unpublish()
        dash.close()


def test_player_says_why_without_audio_and_never_waits_on_a_stopped_server() -> None:
    server = WhipServer(port=0).start()
    player = AudioPlayer(server, autostart=False)
    try:
        assert player.play(2.0) is None  # running, but nothing has been processed
        assert "No audio processed yet" in player.status.value
        assert player.button.description == "Play last 2 s"
        server.stop()
        assert player.play() is None and "stopped" in player.status.value
        player.status.value = ""
        assert player.click()  # returns at once: the fetch runs on its own thread
        wait_until(lambda: "stopped" in player.status.value, timeout=10)
        assert player.wait(5) and not player.button.disabled
        helpers = player.fetched_from - {threading.current_thread().name}
        assert helpers and all(name.startswith("comfywhip-audio-player-") for name in helpers)
        assert player.clip is None and player.audio.value == b""
    finally:
        player.close()
        server.stop()


def test_unknown_session_is_reported_not_raised(server: WhipServer) -> None:
    player = AudioPlayer(server, session_id="no-such-session", autostart=False)
    try:
        assert player.play() is None
        assert "is gone" in player.status.value
        player.tick(0.0, server.sessions)  # the choice is kept, marked gone
        assert player.source.value == "no-such-session"
        assert "(gone)" in player.source.options[-1][0]
    finally:
        player.close()
