"""Playback truth: how much of the assistant's audio the caller has heard. Sans-IO.

Twilio buffers the audio we send and plays it in order; it echoes a mark once the audio
before it has played. So the bridge follows each chunk with (every `mark_spacing_ms`) a
mark named "<item id>:<position ms>", and models playback on a clock between echoes:

- a chunk starts playing when the audio before it has finished, or when it is sent if the
  buffer had run dry (so a slow model does not make the estimate run ahead);
- an echoed mark re-anchors the estimate: that position has certainly been heard.

The estimate never goes below the last echoed mark nor above what was sent. Times are
seconds on any monotonic clock, passed in by the caller; positions are milliseconds into
the item's audio, the unit `conversation.item.truncate` wants.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["DEFAULT_MARK_SPACING_MS", "REMEMBERED_INTERRUPTIONS", "PlaybackTracker", "Truncation"]

# Marks bound the estimate's error when Twilio's playback drifts from the clock; more
# marks cost messages. 100 ms keeps the error small at 10 marks a second while speaking.
DEFAULT_MARK_SPACING_MS = 100.0
# Late audio of a cut item comes right behind the cut, before the next answer: only the
# latest few interrupted items need remembering, so a long call's memory stays flat.
REMEMBERED_INTERRUPTIONS = 8


@dataclass(frozen=True, slots=True)
class Truncation:
    """What to tell the model after a barge-in: the caller heard `audio_end_ms` of the item."""

    item_id: str
    audio_end_ms: int


@dataclass(slots=True)
class _Item:
    """One assistant audio item on its way to the caller."""

    item_id: str
    anchor_ms: float  # a position known (or modelled) to play at `anchor_at`
    anchor_at: float
    sent_ms: float = 0.0
    marked_ms: float = 0.0  # position of the last mark sent
    heard_ms: float = 0.0  # position of the last mark echoed
    last_mark: str | None = None
    all_sent: bool = False  # the model finished this item's audio
    played_out: bool = False  # ... and its last mark has come back


class PlaybackTracker:
    """Tracks the current assistant item's audio from sent to heard, and decides barge-ins."""

    def __init__(self, mark_spacing_ms: float = DEFAULT_MARK_SPACING_MS) -> None:
        self.mark_spacing_ms = mark_spacing_ms
        self._item: _Item | None = None
        self._buffer_empties_at = -math.inf  # when all audio sent so far will have played
        self._interrupted: deque[str] = deque(maxlen=REMEMBERED_INTERRUPTIONS)

    @property
    def playing(self) -> bool:
        """True while the current item still has audio to send or to play."""
        return self._item is not None and not self._item.played_out

    @property
    def item_id(self) -> str | None:
        return self._item.item_id if self._item else None

    def was_interrupted(self, item_id: str) -> bool:
        """True for an item cut off by a barge-in: its late audio must be dropped."""
        return item_id in self._interrupted

    def audio_sent(self, item_id: str, ms: float, now: float) -> str | None:
        """`ms` of the item's audio went to Twilio. Returns a mark name to send after it."""
        starts_at = max(self._buffer_empties_at, now)
        item = self._item
        if item is None or item.item_id != item_id:
            item = self._item = _Item(item_id, anchor_ms=0.0, anchor_at=starts_at)
        elif now >= self._buffer_empties_at:
            # Everything sent had played (the model fell behind): this chunk starts now.
            item.anchor_ms, item.anchor_at = item.sent_ms, now
        self._buffer_empties_at = starts_at + ms / 1000
        item.sent_ms += ms
        if item.sent_ms - item.marked_ms >= self.mark_spacing_ms:
            return self._mark(item)
        return None

    def audio_done(self, item_id: str) -> str | None:
        """The model sent the item's last audio. Returns a final mark to send, if needed."""
        item = self._item
        if item is None or item.item_id != item_id:
            return None
        item.all_sent = True
        if item.sent_ms > item.marked_ms:
            return self._mark(item)
        if item.last_mark is None or item.heard_ms >= item.marked_ms:
            item.played_out = True
        return None

    def mark_played(self, name: str, now: float) -> bool:
        """Twilio echoed mark `name`. True when that finished the current item's audio."""
        item = self._item
        item_id, _, position = name.rpartition(":")
        if item is None or item_id != item.item_id:
            return False  # an older item's mark, or an echo flushed out by a clear
        try:
            heard = float(position)
        except ValueError:
            return False
        if heard > item.heard_ms:
            item.heard_ms = heard
            item.anchor_ms, item.anchor_at = heard, now
            self._buffer_empties_at = now + (item.sent_ms - heard) / 1000
        if item.all_sent and name == item.last_mark and not item.played_out:
            item.played_out = True
            return True
        return False

    def heard_ms(self, now: float) -> float:
        """How much of the current item the caller has heard by `now` (0 if none)."""
        item = self._item
        if item is None:
            return 0.0
        estimate = item.anchor_ms + (now - item.anchor_at) * 1000
        return min(max(estimate, item.heard_ms), item.sent_ms)

    def interrupt(self, now: float) -> Truncation | None:
        """The caller started speaking. None if nothing is playing; otherwise where to cut.

        Call this before sending Twilio `clear`, which echoes every pending mark at once.
        """
        if not self.playing:
            return None
        item = self._item
        assert item is not None
        truncation = Truncation(item.item_id, math.floor(self.heard_ms(now)))
        self._interrupted.append(item.item_id)
        self._item = None
        self._buffer_empties_at = now  # the clear empties Twilio's buffer
        return truncation

    def _mark(self, item: _Item) -> str:
        item.marked_ms = item.sent_ms
        item.last_mark = f"{item.item_id}:{item.sent_ms:.0f}"
        return item.last_mark
