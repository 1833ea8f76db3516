"""The playback tracker: marks, the heard position, and barge-in decisions, with no I/O."""

from __future__ import annotations

import pytest

from highway.call.playback import REMEMBERED_INTERRUPTIONS, PlaybackTracker, Truncation


def send(tracker: PlaybackTracker, item: str, total_ms: int, chunk_ms: int, now: float) -> list:
    """Send `total_ms` of audio in chunks at time `now` (the model is faster than real time)."""
    return [tracker.audio_sent(item, chunk_ms, now) for _ in range(total_ms // chunk_ms)]


def test_marks_every_spacing_and_at_the_end() -> None:
    tracker = PlaybackTracker(mark_spacing_ms=100)
    marks = send(tracker, "item_a", 250, 50, now=0.0)
    assert marks == [None, "item_a:100", None, "item_a:200", None]
    assert tracker.audio_done("item_a") == "item_a:250"
    assert tracker.playing


def test_heard_follows_the_clock_between_marks_and_never_passes_what_was_sent() -> None:
    tracker = PlaybackTracker()
    send(tracker, "item_a", 1000, 100, now=10.0)
    assert tracker.heard_ms(10.0) == 0
    assert tracker.heard_ms(10.35) == pytest.approx(350)
    assert tracker.heard_ms(12.0) == 1000  # capped at what was sent


def test_an_echoed_mark_reanchors_the_estimate() -> None:
    tracker = PlaybackTracker()
    send(tracker, "item_a", 1000, 100, now=0.0)
    # Twilio started playing 80 ms late: the 300 ms mark comes back at 0.38 s.
    tracker.mark_played("item_a:300", now=0.38)
    assert tracker.heard_ms(0.43) == pytest.approx(350)
    # Never below a mark that came back, even if the clock says otherwise.
    assert tracker.heard_ms(0.38) == pytest.approx(300)


def test_a_slow_model_does_not_make_the_estimate_run_ahead() -> None:
    tracker = PlaybackTracker()
    tracker.audio_sent("item_a", 200, now=0.0)
    # The next chunk arrives after the first has played out: it starts when sent.
    tracker.audio_sent("item_a", 200, now=1.0)
    assert tracker.heard_ms(1.1) == pytest.approx(300)


def test_audio_queued_behind_an_earlier_item_starts_after_it() -> None:
    tracker = PlaybackTracker()
    send(tracker, "item_a", 500, 100, now=0.0)
    tracker.audio_done("item_a")
    send(tracker, "item_b", 500, 100, now=0.1)
    assert tracker.item_id == "item_b"
    assert tracker.heard_ms(0.4) == 0  # item_a is still playing
    assert tracker.heard_ms(0.6) == pytest.approx(100)


def test_barge_in_truncates_at_the_heard_position_and_drops_the_item() -> None:
    tracker = PlaybackTracker()
    send(tracker, "item_a", 2000, 100, now=0.0)
    truncation = tracker.interrupt(now=0.7371)
    assert truncation == Truncation("item_a", 737)
    assert tracker.was_interrupted("item_a")
    assert not tracker.playing
    # Marks flushed by the clear come back afterwards and change nothing.
    assert tracker.mark_played("item_a:800", now=0.74) is False
    assert tracker.interrupt(now=0.75) is None


def test_truncation_never_exceeds_the_audio_sent() -> None:
    tracker = PlaybackTracker()
    send(tracker, "item_a", 300, 100, now=0.0)
    # Still generating (no audio_done), the caller has heard it all.
    assert tracker.interrupt(now=5.0) == Truncation("item_a", 300)


def test_nothing_playing_means_no_barge_in() -> None:
    tracker = PlaybackTracker()
    assert tracker.interrupt(now=0.0) is None
    send(tracker, "item_a", 300, 100, now=0.0)
    assert tracker.audio_done("item_a") is None  # the 300 ms mark was already sent
    assert tracker.mark_played("item_a:100", now=0.1) is False
    assert tracker.mark_played("item_a:300", now=0.3) is True  # played out
    assert not tracker.playing
    assert tracker.interrupt(now=0.31) is None


def test_audio_done_after_the_last_mark_came_back_is_played_out_at_once() -> None:
    tracker = PlaybackTracker()
    send(tracker, "item_a", 200, 100, now=0.0)
    tracker.mark_played("item_a:200", now=0.2)
    assert tracker.audio_done("item_a") is None
    assert not tracker.playing


def test_malformed_and_foreign_marks_are_ignored() -> None:
    tracker = PlaybackTracker()
    send(tracker, "item_a", 300, 100, now=0.0)
    for name in ("nonsense", "item_a:", "item_a:abc", "item_z:100"):
        assert tracker.mark_played(name, now=0.1) is False
    assert tracker.heard_ms(0.1) == pytest.approx(100)


def test_only_the_latest_interrupted_items_are_remembered() -> None:
    # A long call is cut off hundreds of times: memory must not grow with it.
    tracker = PlaybackTracker()
    items = [f"item_{n}" for n in range(REMEMBERED_INTERRUPTIONS + 3)]
    for n, item in enumerate(items):
        send(tracker, item, 200, 100, now=float(n))
        assert tracker.interrupt(now=n + 0.05) is not None
    assert [tracker.was_interrupted(item) for item in items] == [False] * 3 + [
        True
    ] * REMEMBERED_INTERRUPTIONS
