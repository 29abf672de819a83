"""Built-in media sources for the WHIP client: no camera, no files, no network needed.

* ``TestPatternTrack``: moving colour bars, a bouncing box, a frame counter and a 16-bit
  binary frame code (so a receiver can tell which frame it got), or one solid colour.
* ``ImageLoopTrack``: a still or animated image repeated forever.
* ``FileLoopTrack``: a video file looped forever.
* ``SineAudioTrack``: a 440 Hz tone.
* ``FlashBeepClip``: a video track and an audio track on one clock: a white flash and a
  1 kHz beep start at the same instants (every second), to measure A/V sync at a receiver.
* ``open_source``: what ``WHIPClient.publish(source)`` sends for a source name (also files
  and V4L2 cameras through aiortc's ``MediaPlayer``).

Frames are paced in real time: frame ``n`` is due ``n / rate`` seconds after the first one was
requested, and its pts counts in the codec clock (1/90000 for video, 1/sample_rate for audio),
so a slow consumer sees frames late but never with compressed timestamps.
"""

from __future__ import annotations

import asyncio
import fractions
import os
import time
from pathlib import Path

import av
import numpy as np
from aiortc import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError
from PIL import Image, ImageDraw, ImageFont, ImageSequence

__all__ = [
    "FileLoopTrack",
    "FlashBeepClip",
    "ImageLoopTrack",
    "SineAudioTrack",
    "TestPatternTrack",
    "open_source",
]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
RGB = tuple[int, int, int]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
Tracks = tuple[MediaStreamTrack | None, MediaStreamTrack | None, MediaPlayer | None]

# 75 % SMPTE-like bars: white, yellow, cyan, green, magenta, red, blue, black.
_BARS: list[RGB] = [
    (191, 191, 191),
    (191, 191, 0),
    (0, 191, 191),
    (0, 191, 0),
    (191, 0, 191),
    (191, 0, 0),
    (0, 0, 191),
    (16, 16, 16),
]


class _Pacer:
    """Real-time schedule: item ``n`` is due at ``start + n / rate``."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive; got {rate!r}")
        self.rate = rate
        self.index = -1
        self._start = 0.0

    async def next(self) -> int:
        self.index += 1
        if self.index == 0:
            self._start = time.monotonic()
        else:
            wait = self._start + self.index / self.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return self.index


def _check_rgb(color: RGB) -> RGB:
    r, g, b = (int(c) for c in color)
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise ValueError(f"colour components must be 0..255; got {color!r}")
    return (r, g, b)


def _triangle(step: int, span: int) -> int:
    """Bounce between 0 and ``span``."""
    if span <= 0:
        return 0
    phase = step % (2 * span)
    return phase if phase <= span else 2 * span - phase


class TestPatternTrack(VideoStreamTrack):
    """A moving test pattern (or one solid colour) at ``width`` x ``height`` and ``fps``."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30,
        *,
        solid_color: RGB | None = None,
    ) -> None:
        super().__init__()
        if width < 16 or height < 16 or width % 2 or height % 2:
            # yuv420p, which every WebRTC encoder uses, needs even dimensions.
            raise ValueError(f"width and height must be even and >= 16; got {width}x{height}")
        self.width, self.height, self.fps = width, height, fps
        self._pacer = _Pacer(fps)
        self._solid: RGB | None = None
        self._solid_array: np.ndarray | None = None
        columns = np.arange(width) * len(_BARS) // width
        row = np.array(_BARS, dtype=np.uint8)[columns]
        self._bars = np.ascontiguousarray(np.broadcast_to(row, (height, width, 3)))
        self._box = max(8, height // 6)
        self._font = _load_font(max(12, height // 20))
        if solid_color is not None:
            self.set_color(solid_color)

    @property
    def frames_sent(self) -> int:
        """How many frames ``recv()`` has returned."""
        return self._pacer.index + 1

    def set_color(self, color: RGB | None) -> None:
        """Switch to one solid colour (every frame exactly ``color``), or back to the pattern."""
        if color is None:
            self._solid, self._solid_array = None, None
            return
        self._solid = _check_rgb(color)
        self._solid_array = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._solid_array[:] = self._solid

    def render(self, n: int) -> np.ndarray:
        """Frame ``n`` as an RGB ``uint8`` array of shape ``(height, width, 3)``; no pacing."""
        if self._solid_array is not None:
            return self._solid_array
        w, h, s = self.width, self.height, self._box
        arr = np.roll(self._bars, -((n * 4) % w), axis=1)
        x, y = _triangle(n * 6, w - s), _triangle(n * 4, h - s)
        arr[y : y + s, x : x + s] = 0
        arr[y + 2 : y + s - 2, x + 2 : x + s - 2] = 255
        # 16-bit frame code along the bottom edge: white cell = 1, black = 0, MSB first.
        cell = max(4, w // 40)
        for bit in range(16):
            arr[h - cell :, bit * cell : (bit + 1) * cell] = 255 if (n >> (15 - bit)) & 1 else 0
        label = Image.new("RGB", (cell * 12, cell * 2 + 8), (0, 0, 0))
        ImageDraw.Draw(label).text((4, 4), f"#{n:06d}", fill=(255, 255, 255), font=self._font)
        lh, lw = min(label.height, h), min(label.width, w)
        arr[:lh, :lw] = np.asarray(label)[:lh, :lw]
        return arr

    @staticmethod
    def decode_frame_code(rgb: np.ndarray) -> int:
        """Read back the frame code written by ``render`` (survives lossy encoding)."""
        h, w = rgb.shape[:2]
        cell = max(4, w // 40)
        row = rgb[h - cell // 2, :, :].mean(axis=1)
        bits = [row[bit * cell + cell // 2] > 127 for bit in range(16)]
        return sum(1 << (15 - i) for i, b in enumerate(bits) if b)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        frame = av.VideoFrame.from_ndarray(self.render(n), format="rgb24")
        frame.pts = round(n * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame


def _load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: bitmap font
        return ImageFont.load_default()


class ImageLoopTrack(VideoStreamTrack):
    """A still image, or the frames of an animated one, repeated forever at ``fps``.

    Images larger than ``max_size`` are scaled down to fit (aspect kept); odd dimensions are
    trimmed by one pixel because yuv420p needs even ones.
    """

    def __init__(
        self, path: str | Path, fps: float = 30, max_size: tuple[int, int] | None = (1280, 720)
    ) -> None:
        super().__init__()
        self.fps = fps
        self._pacer = _Pacer(fps)
        self._frames: list[np.ndarray] = []
        with Image.open(path) as image:
            for page in ImageSequence.Iterator(image):
                rgb = page.convert("RGB")
                if max_size is not None:
                    rgb.thumbnail(max_size)
                w, h = rgb.width - rgb.width % 2, rgb.height - rgb.height % 2
                if w < 2 or h < 2:
                    raise ValueError(f"image {path} is too small: {rgb.width}x{rgb.height}")
                self._frames.append(np.asarray(rgb)[:h, :w].copy())

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames sent."""
        h, w = self._frames[0].shape[:2]
        return w, h

    @property
    def frame_count(self) -> int:
        """Distinct frames in one loop (1 for a still image)."""
        return len(self._frames)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        frame = av.VideoFrame.from_ndarray(self._frames[n % len(self._frames)], format="rgb24")
        frame.pts = round(n * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class SineAudioTrack(AudioStreamTrack):
    """A continuous sine tone in 20 ms mono s16 frames (what Opus packetizes)."""

    def __init__(
        self, frequency: float = 440.0, sample_rate: int = 48000, volume: float = 0.3
    ) -> None:
        super().__init__()
        self.frequency, self.sample_rate, self.volume = frequency, sample_rate, volume
        self.samples_per_frame = sample_rate // 50
        self._pacer = _Pacer(50)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        start = n * self.samples_per_frame
        t = (start + np.arange(self.samples_per_frame)) / self.sample_rate
        wave = np.sin(2 * np.pi * self.frequency * t) * (self.volume * 32767)
        frame = av.AudioFrame.from_ndarray(
            wave.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = start
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class FileLoopTrack(VideoStreamTrack):
    """A video file's frames, looped forever at the file's frame rate (or ``fps``).

    Not ``MediaPlayer(loop=True)``: after a loop its pts restart at 0, which defeats its own
    pacing, so frames then go out as fast as they decode into an unbounded queue. Here one
    frame is decoded per ``recv`` in a worker thread, paced on a fixed schedule and restamped.
    """

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        super().__init__()
        self._container = av.open(str(path))
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{path} has no video stream")
        stream = self._container.streams.video[0]
        self.fps = fps or float(stream.average_rate or stream.guessed_rate or 30)
        self._pacer = _Pacer(self.fps)
        self._frames = self._container.decode(video=0)
        self._busy = False

    def stop(self) -> None:
        super().stop()
        if not self._busy:  # else recv() closes it once the worker thread is done
            self._container.close()

    def _decode(self) -> av.VideoFrame:
        for _ in range(2):
            try:
                return next(self._frames)
            except StopIteration:
                self._container.seek(0)
                self._frames = self._container.decode(video=0)
        raise MediaStreamError  # the file holds no decodable frame at all

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        if self.readyState != "live":  # stopped (and closed) while we waited
            raise MediaStreamError
        self._busy = True
        try:
            frame = await asyncio.to_thread(self._decode)  # keep decoding off the event loop
        finally:
            self._busy = False
            if self.readyState != "live":
                self._container.close()
        frame.pts = round(n * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame


def open_source(
    source: str | os.PathLike[str] | MediaStreamTrack,
    *,
    audio: bool = False,
    width: int = 640,
    height: int = 480,
    fps: float = 30,
) -> Tracks:
    """``(video, audio, player)`` for a source; raises ValueError for an unusable one.

    ``"testsrc"`` → ``TestPatternTrack``; an image path → ``ImageLoopTrack`` (fit into
    width x height); ``/dev/videoN`` → V4L2 ``MediaPlayer`` (the only case with a player);
    another file → ``FileLoopTrack`` at the file's own rate; a track is used as is (an audio
    track publishes audio only). ``audio=True`` adds a ``SineAudioTrack`` (a file's own audio
    is not sent: that would need a second paced, looped decoder).
    """
    if isinstance(source, MediaStreamTrack):
        if source.kind == "audio":
            return None, source, None
        return source, SineAudioTrack() if audio else None, None
    name = os.fspath(source)
    tone = SineAudioTrack() if audio else None
    if name == "testsrc":
        return TestPatternTrack(width, height, fps), tone, None
    path = Path(name)
    try:
        if name.startswith("/dev/video"):
            options = {"video_size": f"{width}x{height}", "framerate": str(fps)}
            player = MediaPlayer(name, format="v4l2", options=options)
            if player.video is None:
                raise ValueError(f"source {name!r} has no video stream")
            return player.video, tone, player
        if not path.is_file():
            raise ValueError(
                f"source {name!r} is not 'testsrc', a /dev/videoN device or an existing file"
            )
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageLoopTrack(path, fps, max_size=(width, height)), tone, None
        return FileLoopTrack(path), tone, None
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot open source {name!r}: {exc}") from exc


class _SharedClock:
    """One start time for several paced tracks (set by whichever asks first)."""

    def __init__(self) -> None:
        self.start: float | None = None

    def origin(self) -> float:
        if self.start is None:
            self.start = time.monotonic()
        return self.start


class _ClockedPacer(_Pacer):
    """``_Pacer`` whose item 0 is due at the shared clock's origin."""

    def __init__(self, rate: float, clock: _SharedClock) -> None:
        super().__init__(rate)
        self.clock = clock

    async def next(self) -> int:
        self.index += 1
        wait = self.clock.origin() + self.index / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return self.index


class FlashBeepClip:
    """``video`` and ``audio`` tracks on one clock: every ``period`` s the picture is white
    and a ``beep_hz`` tone sounds for ``length`` s (black and silence otherwise); the
    flashes and beeps start at the same instants, so a receiver can measure A/V offset."""

    def __init__(
        self,
        width: int = 160,
        height: int = 120,
        fps: float = 30,
        *,
        period: float = 1.0,
        length: float = 0.2,
        beep_hz: float = 1000.0,
        sample_rate: int = 48000,
        volume: float = 0.5,
    ) -> None:
        if not 0 < length < period:
            raise ValueError(f"length must be in (0, period); got {length!r}")
        clock = _SharedClock()
        self.period, self.length = period, length
        self.video = _FlashTrack(width, height, fps, self, clock)
        self.audio = _BeepTrack(beep_hz, sample_rate, volume, self, clock)

    def on(self, t: float) -> bool:
        """Whether the flash/beep is on at ``t`` seconds after the clip's start."""
        return (t % self.period) < self.length


class _FlashTrack(VideoStreamTrack):
    def __init__(
        self, width: int, height: int, fps: float, clip: FlashBeepClip, clock: _SharedClock
    ) -> None:
        super().__init__()
        self.fps, self.clip = fps, clip
        self._pacer = _ClockedPacer(fps, clock)
        self._frames = [np.full((height, width, 3), v, dtype=np.uint8) for v in (0, 255)]

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        white = self.clip.on(n / self.fps)
        frame = av.VideoFrame.from_ndarray(self._frames[int(white)], format="rgb24")
        frame.pts = round(n * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class _BeepTrack(AudioStreamTrack):
    def __init__(
        self, freq: float, rate: int, volume: float, clip: FlashBeepClip, clock: _SharedClock
    ) -> None:
        super().__init__()
        self.freq, self.rate, self.volume, self.clip = freq, rate, volume, clip
        self.samples_per_frame = rate // 50
        self._pacer = _ClockedPacer(50, clock)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        start = n * self.samples_per_frame
        t = (start + np.arange(self.samples_per_frame)) / self.rate
        gate = (t % self.clip.period) < self.clip.length
        wave = np.sin(2 * np.pi * self.freq * t) * gate * (self.volume * 32767)
        frame = av.AudioFrame.from_ndarray(
            wave.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate
        frame.pts, frame.time_base = start, fractions.Fraction(1, self.rate)
        return frame
