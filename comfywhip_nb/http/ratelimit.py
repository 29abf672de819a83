"""Per-client token-bucket rate limiting for the state-changing WHIP requests.

RFC 9725 §4.8 (security considerations) says a WHIP endpoint SHOULD rate-limit the requests
that create or change sessions. Each client (the remote address) owns a bucket holding up to
``burst`` tokens, refilled at ``rate`` tokens per second; a request takes one token, and a
request finding the bucket empty is told how long to wait (the middleware in ``middleware.py``
answers ``429 Too Many Requests`` with ``Retry-After``).

The defaults (20 requests/s, bursts of 40) are far above what a publisher, a browser page or
the test suite sends: one POST, a few PATCHes and a DELETE per session. ``rate=0`` disables the
limiter. The table of buckets is bounded (least recently seen clients are forgotten first), so
a flood of spoofed or rotating addresses costs memory proportional to ``max_clients`` only.

Pure logic: no aiohttp, no clock of its own (``now`` is passed in, monotonic seconds), so it
is tested without a server or any sleeping.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

__all__ = ["DEFAULT_BURST", "DEFAULT_RATE", "RateLimiter"]

DEFAULT_RATE = 20.0
"""Tokens per second per client."""
DEFAULT_BURST = 40.0
"""Bucket size: how many requests a client may send at once after a quiet period."""


class RateLimiter:
    """Token buckets keyed by client (e.g. ``request.remote``); thread-safe.

    >>> limiter = RateLimiter(rate=1, burst=2)
    >>> limiter.check("10.0.0.1", now=0.0), limiter.check("10.0.0.1", now=0.0)
    (None, None)
    >>> limiter.check("10.0.0.1", now=0.0)  # empty: wait one second for the next token
    1.0
    >>> limiter.check("10.0.0.1", now=1.0) is None
    True
    """

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        burst: float | None = None,
        *,
        max_clients: int = 4096,
    ) -> None:
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate must be a finite number >= 0 (0 disables), got {rate!r}")
        if burst is None:
            burst = max(1.0, 2.0 * rate)
        if not math.isfinite(burst) or burst < 1:
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        # client -> (tokens, time of the last refill); oldest-seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, client_key: str, now: float) -> float | None:
        """Take one token for ``client_key`` at monotonic time ``now``.

        Returns None when the request may go ahead, else the seconds until a token is
        available (the request is refused and consumes nothing).
        """
        if self.rate <= 0:
            return None
        with self._lock:
            tokens, last = self._buckets.pop(client_key, (self.burst, now))
            # A clock that goes backwards (or a caller mixing clocks) must not add tokens.
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens >= 1.0:
                self._store(client_key, tokens - 1.0, now)
                return None
            self._store(client_key, tokens, now)
            return (1.0 - tokens) / self.rate

    def _store(self, client_key: str, tokens: float, now: float) -> None:
        self._buckets[client_key] = (tokens, now)  # re-inserted last: most recently seen
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def reset(self) -> None:
        """Forget every client (all buckets full again)."""
        with self._lock:
            self._buckets.clear()
