"""The conversation's transcript in speaking order. Sans-IO.

OpenAI transcribes the caller asynchronously, so the caller's words can arrive after the
agent's reply to them has started. Each turn therefore takes its place when it begins (the
caller's when their audio is committed, the agent's when its message item is added) and
is released once it and every turn before it have their text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Transcript", "Turn"]

Role = Literal["user", "assistant"]


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
        self.history: list[Turn] = []  # released turns that have text, in order

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
