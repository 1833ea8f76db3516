"""Numbered audio: a 16-bit stamp in the first four µ-law samples of a frame or delta.

Highway forwards µ-law untouched in pcmu mode, so the far side reads back which frame
arrived: each sample is matched to the one sent, and losses and reordering show.
"""

from __future__ import annotations

__all__ = ["STAMPS", "read_stamp", "stamp_frame"]

STAMPS = 65536  # stamps count modulo this


def stamp_frame(frame: bytes, number: int) -> bytes:
    """`frame` with `number` (mod STAMPS) in its first 4 bytes, one nibble per byte, as
    near-silent µ-law codes (0xF0-0xFF): four quiet samples that no listener would notice."""
    stamp = bytes(0xF0 | (number >> shift) & 0xF for shift in (12, 8, 4, 0))
    return stamp + frame[4:]


def read_stamp(audio: bytes) -> int:
    """The number `stamp_frame` put in µ-law `audio`."""
    return (audio[0] & 0xF) << 12 | (audio[1] & 0xF) << 8 | (audio[2] & 0xF) << 4 | audio[3] & 0xF
