"""Signal processing for the audio nodes, in torch on the waveform's device.

* ``resample``: the windowed-sinc resampler ComfyUI's AudioConcat/AudioMerge call through
  ``torchaudio.functional.resample`` with its defaults (Hann window, 6 zero crossings, rolloff
  0.99), written out here so the built-in engine needs no torchaudio. The parity tests compare
  it with torchaudio's.
* ``BiquadCascade``: Butterworth low-/high-pass filters as cascaded sections that keep their
  state between calls, so a stream filtered in 20 ms chunks equals the stream filtered whole.
  A per-sample loop in Python would cost milliseconds per chunk, so each section runs as a
  Direct Form I filter whose recursive part is an FFT convolution with its impulse response
  (exact within a chunk, since a chunk of L samples only sees the response's first L taps);
  the state of the previous chunk enters as two extra input samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BiquadCascade", "Section", "butterworth", "resample"]

#: torchaudio.functional.resample's defaults.
ZERO_CROSSINGS = 6
ROLLOFF = 0.99
#: Largest resampling kernel built (rates whose ratio reduces to huge integers, such as
#: 44101 -> 48000, would need gigabytes; torchaudio would try).
MAX_KERNEL = 1 << 24


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """``waveform [..., T]`` from ``orig_rate`` to ``new_rate`` (Hz), on its device."""
    if orig_rate == new_rate:
        return waveform
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    base = min(orig, new) * ROLLOFF
    width = math.ceil(ZERO_CROSSINGS * orig / base)
    if new * (2 * width + orig) > MAX_KERNEL:
        raise ValueError(
            f"resampling {orig_rate} Hz to {new_rate} Hz needs a {new}x{2 * width + orig} "
            "kernel; use sample rates with a larger common divisor"
        )
    dtype, device = waveform.dtype, waveform.device
    taps = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    phases = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new
    t = ((phases + taps) * base).clamp(-ZERO_CROSSINGS, ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    one = torch.ones((), dtype=dtype, device=device)
    kernel = torch.where(t == 0, one, t.sin() / t) * window * (base / orig)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel, stride=orig)  # [N, new phases, steps]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    length = math.ceil(new * shape[-1] / orig)
    return out[:, :length].reshape(*shape[:-1], length)


@dataclass(frozen=True)
class Section:
    """One second-order section, normalised so that a0 = 1 (b2 = a2 = 0: first order)."""

    b0: float
    b1: float
    b2: float
    a1: float
    a2: float


def butterworth(mode: str, cutoff_hz: float, rate: int, order: int) -> list[Section]:
    """A Butterworth low- or high-pass of ``order`` (1..8) as sections (bilinear transform,
    cutoff pre-warped, so the response is -3 dB at ``cutoff_hz``)."""
    if mode not in ("lowpass", "highpass"):
        raise ValueError(f"mode must be 'lowpass' or 'highpass', got {mode!r}")
    k = math.tan(math.pi * cutoff_hz / rate)  # analog cutoff after pre-warping, fs = 2
    sections = []
    if order % 2:  # the real pole: H(s) = 1 / (s + 1) or s / (s + 1)
        a1 = (k - 1) / (k + 1)
        gain = k / (1 + k) if mode == "lowpass" else 1 / (1 + k)
        sign = 1.0 if mode == "lowpass" else -1.0
        sections.append(Section(gain, sign * gain, 0.0, a1, 0.0))
    for i in range(order // 2):
        angle = (i + 1) * math.pi / order if order % 2 else (2 * i + 1) * math.pi / (2 * order)
        q = 1 / (2 * math.cos(angle))
        norm = 1 + k / q + k * k
        a1, a2 = 2 * (k * k - 1) / norm, (1 - k / q + k * k) / norm
        if mode == "lowpass":
            b0 = k * k / norm
            sections.append(Section(b0, 2 * b0, b0, a1, a2))
        else:
            b0 = 1 / norm
            sections.append(Section(b0, -2 * b0, b0, a1, a2))
    return sections


def _all_pole_response(a1: float, a2: float, length: int, dtype, device) -> torch.Tensor:
    """First ``length`` taps of 1 / (1 + a1 z^-1 + a2 z^-2): entry [0, 0] of the companion
    matrix's powers, built by doubling (log2(length) matrix products, no per-sample loop)."""
    step = torch.tensor([[-a1, -a2], [1.0, 0.0]], dtype=dtype, device=device)
    powers = torch.eye(2, dtype=dtype, device=device)[None]
    while powers.shape[0] < length:
        powers = torch.cat([powers, step @ powers])
        step = step @ step
    return powers[:length, 0, 0]


class BiquadCascade:
    """Sections run one after the other on ``[N, T]`` signals, with state per signal row.
    ``reset`` forgets the past (a new stream, another rate or channel count)."""

    def __init__(self, sections: list[Section]) -> None:
        self.sections = sections
        self.state: torch.Tensor | None = None
        """[N, sections, 4]: x[-1], x[-2], y[-1], y[-2] of each section."""
        self._spectra: dict[tuple[int, int, str], torch.Tensor] = {}

    def reset(self) -> None:
        self.state = None

    def set_sections(self, sections: list[Section]) -> None:
        """New coefficients, same state (Direct Form I takes a change without a jump)."""
        if len(sections) != len(self.sections):
            self.state = None
        if sections != self.sections:
            self._spectra.clear()
        self.sections = sections

    def _spectrum(self, index: int, length: int, size: int, x: torch.Tensor) -> torch.Tensor:
        key = (index, length, str(x.device))
        found = self._spectra.get(key)
        if found is None:
            if len(self._spectra) >= 32:  # chunk lengths vary rarely; keep it bounded
                self._spectra.clear()
            s = self.sections[index]
            response = _all_pole_response(s.a1, s.a2, length, x.dtype, x.device)
            found = self._spectra[key] = torch.fft.rfft(response, size)
        return found

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Filter ``x [N, T]`` (float64, or float32 where float64 is missing) from the state."""
        rows, length = x.shape
        if length == 0:
            return x
        state = self.state
        if state is None or state.shape[0] != rows or state.device != x.device:
            state = torch.zeros(rows, len(self.sections), 4, dtype=x.dtype, device=x.device)
        size = 1 << max(0, (2 * length - 2).bit_length())  # >= 2 * length - 1: no wrap-around
        new_state = torch.empty_like(state)
        for i, s in enumerate(self.sections):
            x1, x2, y1, y2 = state[:, i].unbind(1)
            xp = torch.cat([x2[:, None], x1[:, None], x], dim=1)
            v = s.b0 * xp[:, 2:] + s.b1 * xp[:, 1:-1] + s.b2 * xp[:, :-2]
            v[:, 0] -= s.a1 * y1 + s.a2 * y2  # the previous outputs, folded into the input
            if length > 1:
                v[:, 1] -= s.a2 * y1
            y = torch.fft.irfft(torch.fft.rfft(v, size) * self._spectrum(i, length, size, x), size)
            y = y[:, :length]
            yp = torch.cat([y2[:, None], y1[:, None], y], dim=1)
            new_state[:, i] = torch.stack([xp[:, -1], xp[:, -2], yp[:, -1], yp[:, -2]], dim=1)
            x = y
        # a NaN or inf chunk would poison every later one: the next chunk starts afresh
        self.state = new_state if bool(torch.isfinite(new_state).all()) else None
        return x
