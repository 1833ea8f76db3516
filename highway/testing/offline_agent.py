"""The agent `highway serve` uses in offline mode: the Realtime stand-in with a short script.

It speaks generated tones rather than words; the transcripts say what it "said".
"""

from __future__ import annotations

from highway.testing.realtime_standin import RealtimeStandIn, Reply

GREETING = Reply(
    text="Hello, this is Highway's offline agent. No AI model is connected, so this call is"
    " simulated.",
    audio_ms=3000,
)
ANSWER = Reply(text="I heard you. This is the offline agent speaking.", audio_ms=1500)


def offline_agent() -> RealtimeStandIn:
    """A stand-in agent that greets every call, then answers every turn the same way. It
    keeps no client events: `highway serve` may run for weeks."""
    return RealtimeStandIn(first_reply=GREETING, default_reply=ANSWER, record_events=False)
