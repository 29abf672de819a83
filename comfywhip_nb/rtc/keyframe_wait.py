"""Waiting for the publisher's first keyframe: one clear line instead of a warning per frame.

OBS and many hardware encoders ignore keyframe requests (PLI) and drop media until DTLS is
up, so the first frames that arrive are delta frames and nothing can be decoded until the
encoder's next scheduled keyframe. aiortc's decoder thread logs "failed to decode" at WARNING
for each of them. ``DecodeWarnings`` is a ``logging.Filter`` on aiortc's receiver logger
that recognises those records when they come from the decoder thread of a server session
still waiting for its first frame: it drops them and tells the session, which logs once
"waiting for a keyframe from the publisher; set its keyframe interval to 1-2 s". (Demoting
to DEBUG would not do: handlers without a level, as ``logging.basicConfig`` makes, print
DEBUG records of loggers that let them through.)
Records from anything else (other peers in the process, a session that already decodes)
pass unchanged.

Which session a record belongs to is found from the record's thread: aiortc keeps each
receiver's decoder thread in a private attribute (checked by the keyframe test).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DECODE_WARNINGS", "DecodeWarnings", "decoder_threads"]

RECEIVER_LOGGER = "aiortc.rtcrtpreceiver"
FAILED_TO_DECODE = "RTCRtpReceiver(video) failed to decode"


def decoder_threads(pc: Any) -> list[threading.Thread]:
    """The video decoder threads aiortc runs for ``pc``'s receivers (started after DTLS)."""
    threads = []
    for transceiver in pc.getTransceivers():
        thread = getattr(transceiver.receiver, "_RTCRtpReceiver__decoder_thread", None)
        if isinstance(thread, threading.Thread):
            threads.append(thread)
    return threads


class DecodeWarnings(logging.Filter):
    """Drops aiortc's per-frame decode warnings of sessions waiting for a keyframe."""

    def __init__(self) -> None:
        super().__init__()
        self._installed = False
        self._lock = threading.Lock()
        # copy-on-write: decoder threads read it while the event loop replaces it
        self._watched: dict[str, tuple[Callable[[], list[threading.Thread]], Callable[[], bool]]]
        self._watched = {}

    def install(self) -> None:
        """Attach to aiortc's receiver logger once per process."""
        with self._lock:
            if not self._installed:
                logging.getLogger(RECEIVER_LOGGER).addFilter(self)
                self._installed = True

    def watch(
        self,
        key: str,
        threads: Callable[[], list[threading.Thread]],
        on_failure: Callable[[], bool],
    ) -> None:
        """``on_failure()`` runs on the decoder thread; True drops the warning."""
        self.install()
        with self._lock:
            self._watched = {**self._watched, key: (threads, on_failure)}

    def unwatch(self, key: str) -> None:
        with self._lock:
            self._watched = {k: v for k, v in self._watched.items() if k != key}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not str(record.msg).startswith("RTCRtpReceiver("):
            return True
        if not record.getMessage().startswith(FAILED_TO_DECODE):
            return True
        for threads, on_failure in self._watched.values():
            if any(t.ident == record.thread for t in threads()):
                return not on_failure()
        return True


#: the one instance the server's sessions register with
DECODE_WARNINGS = DecodeWarnings()
