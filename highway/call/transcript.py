"""The conversation's transcript in speaking order. Sans-IO.

OpenAI transcribes the caller asynchronously, so the caller's words can arrive after the
agent's reply to them has started. Each turn therefore takes its place when it begins (the
caller's when their audio is committed, the agent's when its message item is added) and
is released once it and every turn before it have their text.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

__all__ = ["RESTORED_TURNS", "Transcript", "Turn"]

Role = Literal["user", "assistant"]
# The recent conversation a new model session is given after a reconnect. The store keeps
# every turn; memory per call stays flat however long the call runs.
RESTORED_TURNS = 100


@dataclass(slots=True)
class Turn:
    role: Role
    item_id: str
    text: str | None = None
    settled: bool = False  # the text is final (or will never come)


class Transcript:
    def __init__(self) -> None:
        self._waiting: list[Turn] = []  # in speaking order, not yet released
        self._by_item: dict[str, Turn] = {}
        # The latest released turns that have text, in order.
        self.history: deque[Turn] = deque(maxlen=RESTORED_TURNS)

    def begin(self, role: Role, item_id: str) -> None:
        """A turn started; its text comes later."""
        if item_id not in self._by_item:
            turn = self._by_item[item_id] = Turn(role, item_id)
            self._waiting.append(turn)

    def settle(self, role: Role, item_id: str, text: str | None) -> list[Turn]:
        """The turn's final text (None: there will be none). Returns the turns released."""
        self.begin(role, item_id)
        turn = self._by_item[item_id]
        turn.text, turn.settled = text, True
        return self._release(everything=False)

    def flush(self) -> list[Turn]:
        """At the end of the call: release what has text, in order, giving up on the rest."""
        return self._release(everything=True)

    def _release(self, *, everything: bool) -> list[Turn]:
        released = []
        while self._waiting and (everything or self._waiting[0].settled):
            turn = self._waiting.pop(0)
            del self._by_item[turn.item_id]
            if turn.text:
                released.append(turn)
        self.history.extend(released)
        return released
