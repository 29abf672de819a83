"""Frame-index stamps: black/white blocks in the luma plane that survive VP8/H264 and inversion.

Layout: one row of ``BLOCKS`` square blocks along the top edge, ``block_size(width)`` pixels
each. Block 0 is white and block 1 black (reference levels, so the reader finds its
threshold and notices an inverted image); then ``SESSION_BITS`` bits of publisher session
number, ``INDEX_BITS`` bits of frame index (MSB first) and one even-parity bit. The reader
averages the inner half of each block, so codec ringing at block edges does not matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "BLOCKS",
    "INDEX_BITS",
    "SESSION_BITS",
    "block_size",
    "read_stamp",
    "stamp_yuv420p",
]

SESSION_BITS = 5
INDEX_BITS = 16
BLOCKS = 2 + SESSION_BITS + INDEX_BITS + 1
MIN_CONTRAST = 0.35
"""Reference blocks closer than this (0..1 scale) mean the stamp is not readable."""


def block_size(width: int) -> int:
    """Even block edge that fits ``BLOCKS`` blocks into ``width`` (even for chroma 4:2:0)."""
    size = (width // BLOCKS) // 2 * 2
    if size < 4:
        raise ValueError(f"frames must be at least {4 * BLOCKS} pixels wide, got {width}")
    return size


def _bits(session: int, index: int) -> list[int]:
    if not 0 <= session < 1 << SESSION_BITS:
        raise ValueError(f"session must be in 0..{(1 << SESSION_BITS) - 1}, got {session}")
    value = (session << INDEX_BITS) | (index % (1 << INDEX_BITS))
    width = SESSION_BITS + INDEX_BITS
    payload = [(value >> (width - 1 - i)) & 1 for i in range(width)]
    return [1, 0, *payload, sum(payload) % 2]


def stamp_yuv420p(yuv: np.ndarray, width: int, height: int, session: int, index: int) -> None:
    """Write the stamp in place into a ``(height * 3 // 2, width)`` yuv420p array.

    Luma gets 0/255 blocks; the chroma under the strip is set to neutral 128 so the blocks
    stay grey after RGB conversion whatever the picture around them.
    """
    size = block_size(width)
    if yuv.shape != (height * 3 // 2, width) or yuv.dtype != np.uint8:
        raise ValueError(f"expected a uint8 yuv420p array {(height * 3 // 2, width)}")
    for i, bit in enumerate(_bits(session, index)):
        yuv[:size, i * size : (i + 1) * size] = 255 if bit else 0
    # U then V planes: each (height/2, width/2), stored as height/4 rows of `width` bytes
    chroma_rows = size // 2
    quarter = width // 2
    for plane in range(2):
        flat = yuv[height:].reshape(-1)[plane * (height // 2) * quarter :]
        for row in range(chroma_rows):
            flat[row * quarter : row * quarter + BLOCKS * size // 2] = 128


def read_stamp(image: Any) -> tuple[int, int] | None:
    """``(session, index)`` from an RGB image ``[1,H,W,3]``/``[H,W,3]`` (float 0..1 or uint8),
    inverted or not; ``None`` when the blocks are unreadable or the parity is wrong."""
    if image.ndim == 4:
        image = image[0]
    width = int(image.shape[1])
    size = block_size(width)
    lo, hi = size // 4, size - size // 4
    strip = image[lo:hi, : BLOCKS * size]
    integer = str(image.dtype) in ("uint8", "torch.uint8")
    if hasattr(strip, "detach"):  # a torch tensor (not imported here: the publisher has none)
        strip = strip.detach().cpu().numpy()
    strip = np.asarray(strip, dtype=np.float32)
    if integer:
        strip = strip / 255.0
    # mean over rows and channels, then over the inner columns of each block
    columns = strip.mean(axis=(0, 2)).reshape(BLOCKS, size)[:, lo:hi].mean(axis=1)
    white, black = float(columns[0]), float(columns[1])
    if abs(white - black) < MIN_CONTRAST:
        return None
    threshold = (white + black) / 2
    bits = columns[2:] > threshold if white > black else columns[2:] < threshold
    payload, parity = bits[:-1], int(bits[-1])
    if int(payload.sum()) % 2 != parity:
        return None
    value = 0
    for bit in payload:
        value = (value << 1) | int(bit)
    return value >> INDEX_BITS, value & ((1 << INDEX_BITS) - 1)
