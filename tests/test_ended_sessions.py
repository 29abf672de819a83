"""The short memory of ended sessions: bounded in count and age, small entries only."""

from __future__ import annotations

from comfywhip_nb.rtc.end_reason import EndReason, SessionEnd
from comfywhip_nb.rtc.ended import EndedSessions

END = SessionEnd(EndReason.CLOSED_BY_PEER, "the publisher closed DTLS (close_notify)")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_kept_for_ttl_seconds_then_forgotten() -> None:
    clock = Clock()
    ended = EndedSessions(ttl=60.0, clock=clock)
    ended.add("abc", "whip", END)
    clock.now += 59.9
    record = ended.get("abc")
    assert record is not None and record.end == END and record.kind == "whip"
    clock.now += 0.2
    assert ended.get("abc") is None
    assert len(ended) == 0


def test_the_oldest_entries_go_first_past_max_entries() -> None:
    ended = EndedSessions(ttl=60.0, max_entries=3, clock=Clock())
    for n in range(5):
        ended.add(f"s{n}", "whip", END)
    assert len(ended) == 3
    assert ended.get("s0") is None and ended.get("s1") is None
    assert ended.get("s4") is not None


def test_end_text() -> None:
    assert str(SessionEnd(EndReason.DELETE)) == "delete"
    assert str(END) == "closed_by_peer: the publisher closed DTLS (close_notify)"
