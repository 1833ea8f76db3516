"""Highway's meters, and their Prometheus text for `GET /metrics`.

Counting must cost next to nothing on the bridge's hot path, so a call bumps plain
attributes of one per-process `Meters` object: no locks (Trio runs one thread), no label
look-ups and no prometheus_client calls per frame. prometheus_client is used only when a
scrape renders a snapshot.

Several workers share one port and a scrape reaches any of them, so each worker writes its
snapshot to a shared directory (`WorkerShare`), and the worker that answers merges them all
(`merge_snapshots`) before rendering: the deployment's totals, whichever worker answers.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

__all__ = [
    "BOUNDS",
    "CONTENT_TYPE",
    "LatencyHistogram",
    "Meters",
    "WorkerShare",
    "merge_snapshots",
    "render",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Upper bounds of the delay buckets, in seconds; a last bucket (+Inf) takes the rest. The
# bridge's own delay is well under a millisecond when all is well, so the fine buckets are
# at the bottom; 250 ms and more is trouble whatever its exact size.
BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

Snapshot = dict[str, Any]


class LatencyHistogram:
    """Counts of delays per bucket of `BOUNDS` (not cumulative), and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one delay. Called per message: keep it this small."""
        # bisect_left puts a value equal to a bound in that bound's bucket (Prometheus'
        # `le`, "less than or equal"); past the last bound it is the +Inf bucket's index.
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add `other`'s counts and sum to this one's."""
        self.counts = [
            mine + theirs for mine, theirs in zip(self.counts, other.counts, strict=True)
        ]
        self.sum += other.sum

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": list(BOUNDS), "counts": list(self.counts), "sum": self.sum}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        """The histogram `to_dict` gave; ValueError if it has other bounds or is malformed."""
        # Counts over other bounds (a file from another version of Highway) must not be
        # added bucket by bucket to these.
        if tuple(data["bounds"]) != BOUNDS or len(data["counts"]) != len(BOUNDS) + 1:
            raise ValueError("histogram with other bounds")
        histogram = cls()
        histogram.counts = [int(count) for count in data["counts"]]
        histogram.sum = float(data["sum"])
        return histogram


class Meters:
    """This process's counts. The call session bumps the attributes directly."""

    __slots__ = (
        "barge_ins",
        "caller_to_model",
        "calls_ended",
        "errors",
        "frames_in",
        "frames_out",
        "model_to_caller",
        "openai_reconnects",
        "outcomes",
        "refusals",
        "truncations",
    )

    def __init__(self) -> None:
        self.frames_in = 0  # media frames received from callers
        self.frames_out = 0  # media frames sent to callers
        self.barge_ins = 0
        self.truncations = 0
        self.openai_reconnects = 0
        # The bridge's own delay per message: from reading it to writing its result.
        self.caller_to_model = LatencyHistogram()
        self.model_to_caller = LatencyHistogram()
        self.errors: Counter[str] = Counter()  # by kind: "bad_frame", "openai_error", ...
        self.calls_ended: Counter[tuple[str, str]] = Counter()  # by (status, reason)
        self.outcomes: Counter[str] = Counter()  # verification outcomes
        self.refusals: Counter[str] = Counter()  # refused calls, by reason

    # Per call or per event, not per frame: a Counter's look-up is fine here.

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def call_ended(self, status: str, reason: str) -> None:
        self.calls_ended[status, reason] += 1

    def outcome(self, name: str) -> None:
        self.outcomes[name] += 1

    def refused(self, reason: str) -> None:
        self.refusals[reason] += 1

    def snapshot(self, active_calls: int) -> Snapshot:
        """Everything, as a JSON-able dict, stamped with this process and the time."""
        return {
            "pid": os.getpid(),
            "writtenAt": time.time(),
            "activeCalls": active_calls,
            "framesIn": self.frames_in,
            "framesOut": self.frames_out,
            "bargeIns": self.barge_ins,
            "truncations": self.truncations,
            "openaiReconnects": self.openai_reconnects,
            "callerToModel": self.caller_to_model.to_dict(),
            "modelToCaller": self.model_to_caller.to_dict(),
            "errors": dict(self.errors),
            "callsEnded": _ended_list(self.calls_ended),
            "outcomes": dict(self.outcomes),
            "refused": dict(self.refusals),
        }


_PLAIN_COUNTS = ("framesIn", "framesOut", "bargeIns", "truncations", "openaiReconnects")
_HISTOGRAMS = ("callerToModel", "modelToCaller")
_LABELLED_COUNTS = ("errors", "outcomes", "refused")


def merge_snapshots(
    snapshots: Iterable[Snapshot], now: float, stale_after: float = 5.0
) -> Snapshot:
    """The sum of every worker's snapshot (without "pid" and "writtenAt").

    Counters never go down, so a dead worker's counts stay in the totals; but its calls are
    not live, so "activeCalls" only counts snapshots written within `stale_after` of `now`.
    Raises KeyError, TypeError or ValueError for a snapshot of the wrong shape.
    """
    active_calls = 0
    plain = dict.fromkeys(_PLAIN_COUNTS, 0)
    histograms = {name: LatencyHistogram() for name in _HISTOGRAMS}
    labelled: dict[str, Counter[str]] = {name: Counter() for name in _LABELLED_COUNTS}
    ended: Counter[tuple[str, str]] = Counter()
    for snapshot in snapshots:
        if now - snapshot["writtenAt"] <= stale_after:
            active_calls += int(snapshot["activeCalls"])
        for name in _PLAIN_COUNTS:
            plain[name] += int(snapshot[name])
        for name in _HISTOGRAMS:
            histograms[name].merge(LatencyHistogram.from_dict(snapshot[name]))
        for name in _LABELLED_COUNTS:
            labelled[name].update({str(key): int(n) for key, n in snapshot[name].items()})
        for entry in snapshot["callsEnded"]:
            ended[str(entry["status"]), str(entry["reason"])] += int(entry["count"])
    return {
        "activeCalls": active_calls,
        **plain,
        **{name: histogram.to_dict() for name, histogram in histograms.items()},
        **{name: dict(counts) for name, counts in labelled.items()},
        "callsEnded": _ended_list(ended),
    }


def _ended_list(ended: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
    # JSON has no tuple keys: one entry per (status, reason).
    return [
        {"status": status, "reason": reason, "count": count}
        for (status, reason), count in sorted(ended.items())
    ]


def render(snapshot: Snapshot) -> bytes:
    """A snapshot (one worker's, or merged) as Prometheus text, of type `CONTENT_TYPE`."""
    # A registry of its own each time: the global one would keep collectors across the
    # many apps a test run creates, and a scrape is rare enough for this to cost nothing.
    registry = CollectorRegistry()
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


class _SnapshotCollector:
    """prometheus_client's view of one snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        yield GaugeMetricFamily(
            "highway_active_calls", "Calls being bridged now.", value=s["activeCalls"]
        )

        frames = CounterMetricFamily(
            "highway_frames_total",
            "Media frames bridged: 'in' received from callers, 'out' sent to callers.",
            labels=["direction"],
        )
        frames.add_metric(["in"], s["framesIn"])
        frames.add_metric(["out"], s["framesOut"])
        yield frames

        delay = HistogramMetricFamily(
            "highway_bridge_delay_seconds",
            "Delay the bridge itself adds to a message, from reading it to writing its result.",
            labels=["leg"],
        )
        for leg, name in (
            ("caller_to_model", "callerToModel"),
            ("model_to_caller", "modelToCaller"),
        ):
            histogram = s[name]
            cumulative = list(accumulate(histogram["counts"]))
            buckets = [
                (floatToGoString(bound), count)
                for bound, count in zip(BOUNDS, cumulative, strict=False)
            ]
            buckets.append(("+Inf", cumulative[-1]))
            delay.add_metric([leg], buckets, histogram["sum"])
        yield delay

        yield CounterMetricFamily(
            "highway_barge_ins_total",
            "Times a caller talked over the agent.",
            value=s["bargeIns"],
        )
        yield CounterMetricFamily(
            "highway_truncations_total",
            "Agent answers cut short at what the caller had heard.",
            value=s["truncations"],
        )
        yield CounterMetricFamily(
            "highway_openai_reconnects_total",
            "New OpenAI sessions opened for calls already under way (reconnects, rollovers).",
            value=s["openaiReconnects"],
        )
        yield _labelled("highway_errors_total", "Errors, by kind.", "kind", s["errors"])

        ended = CounterMetricFamily(
            "highway_calls_ended_total",
            "Calls finished, by final status and end reason.",
            labels=["status", "reason"],
        )
        for entry in s["callsEnded"]:
            ended.add_metric([entry["status"], entry["reason"]], entry["count"])
        yield ended

        yield _labelled(
            "highway_verification_outcomes_total",
            "Verification calls' outcomes.",
            "outcome",
            s["outcomes"],
        )
        yield _labelled(
            "highway_calls_refused_total",
            "Calls refused before being bridged, by reason.",
            "reason",
            s["refused"],
        )


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    # Only the label values seen so far: these sets are open-ended.
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class WorkerShare:
    """A directory where each worker process leaves its latest snapshot for the others."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def write(self, snapshot: Snapshot) -> None:
        """Replace this worker's file with `snapshot`, atomically: a reader sees the old
        file or the new one, never a part of either."""
        path = self.directory / f"worker-{os.getpid()}.json"
        # Same directory, so os.replace is a rename within one file system. No fsync: the
        # readers are live processes, not a restart after a crash.
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".worker-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(snapshot))
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise

    def read_all(self) -> list[Snapshot]:
        """Every worker's snapshot. A file that cannot be read or is not a snapshot is left
        out, with a warning: a scrape shows what it can rather than failing."""
        snapshots = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                snapshot = orjson.loads(path.read_bytes())
                merge_snapshots([snapshot], now=0.0)  # checks its shape, as merging will
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                log.warning("metrics: skipped %s: %r", path.name, error)
                continue
            snapshots.append(snapshot)
        return snapshots
