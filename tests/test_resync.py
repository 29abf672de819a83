"""``rtc/resync.py`` on aiortc's real jitter buffer: a gap that retransmission cannot fill is
skipped after ``gap_timeout`` (one PLI asked for), and a buffer without a gap is left alone.
The end-to-end check (3 s blackout, 640x480) is tests/test_netns_faults.py."""

from __future__ import annotations

from types import SimpleNamespace

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from comfywhip_nb.rtc.resync import GapWatch

SSRC = 4242


def _packet(seq: int) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=(seq // 2) * 3000)
    packet.ssrc = SSRC
    packet._data = bytes([seq % 256])  # what aiortc's depayloader leaves for reassembly
    return packet


def _receiver() -> tuple[SimpleNamespace, JitterBuffer]:
    jb = JitterBuffer(capacity=512, is_video=True)  # aiortc's video settings
    holder = SimpleNamespace(**{"_RTCRtpReceiver__jitter_buffer": jb})  # where aiortc keeps it
    return holder, jb


def test_unfillable_gap_is_skipped_after_the_timeout() -> None:
    receiver, jb = _receiver()
    released = [jb.add(_packet(seq))[1] for seq in range(6)]
    assert sum(f is not None for f in released) == 2  # frames 0 and 1 out, frame 2 waits
    # seq 6..199 never arrive (a blackout longer than the sender's history)
    held = [jb.add(_packet(seq))[1] for seq in range(200, 211)]
    assert all(f is None for f in held), "aiortc holds every frame behind the gap"

    watch = GapWatch(receiver, gap_timeout=0.3)
    assert watch.check(100.0) is None  # gap seen: the clock starts
    assert watch.check(100.2) is None  # retransmission may still come
    assert watch.check(100.4) == SSRC  # given up: skip, and PLI this SSRC
    assert watch.skips == 1
    # frames after the gap flow again with the next packet
    assert jb.add(_packet(211))[1] is not None


def test_no_gap_no_skip() -> None:
    receiver, jb = _receiver()
    for seq in range(40):
        jb.add(_packet(seq))
    watch = GapWatch(receiver, gap_timeout=0.3)
    assert all(watch.check(t) is None for t in (0.0, 1.0, 5.0))
    assert watch.skips == 0


def test_a_receiver_without_aiortcs_buffer_is_left_alone() -> None:
    watch = GapWatch(SimpleNamespace(), gap_timeout=0.3)
    assert watch.check(0.0) is None and watch.check(10.0) is None
