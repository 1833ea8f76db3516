"""highway.metrics: the hot-path meters, merging workers' snapshots, the Prometheus text."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import orjson
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from highway.metrics import (
    BOUNDS,
    CONTENT_TYPE,
    LatencyHistogram,
    Meters,
    WorkerShare,
    merge_snapshots,
    render,
)

INF = len(BOUNDS)  # the +Inf bucket's index


def families(text: bytes) -> dict[str, Any]:
    """The parsed exposition, by family name (counters' without `_total`)."""
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample's value, by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def busy_meters() -> Meters:
    meters = Meters()
    meters.frames_in = 500
    meters.frames_out = 450
    meters.barge_ins = 3
    meters.truncations = 2
    meters.openai_reconnects = 1
    for seconds in (0.0003, 0.001, 0.004):
        meters.caller_to_model.observe(seconds)
    meters.model_to_caller.observe(0.3)
    meters.error("bad_frame")
    meters.error("bad_frame")
    meters.error("store")
    meters.call_ended("completed", "caller_hung_up")
    meters.call_ended("failed", "openai_unavailable")
    meters.outcome("verified")
    meters.refused("capacity")
    return meters


# LatencyHistogram


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0.0, 0),
        (0.00005, 0),  # equal to the first bound: in it (`le`)
        (0.0000501, 1),
        (0.001, BOUNDS.index(0.001)),
        (0.0010001, BOUNDS.index(0.001) + 1),
        (0.25, INF - 1),  # equal to the last bound
        (0.2500001, INF),
        (30.0, INF),
    ],
)
def test_a_delay_goes_in_the_first_bucket_whose_bound_it_does_not_exceed(seconds, bucket):
    histogram = LatencyHistogram()

    histogram.observe(seconds)

    expected = [0] * (len(BOUNDS) + 1)
    expected[bucket] = 1
    assert histogram.counts == expected
    assert histogram.sum == seconds


def test_histograms_merge_by_adding_counts_and_sums():
    mine, theirs = LatencyHistogram(), LatencyHistogram()
    mine.observe(0.0003)
    theirs.observe(0.0003)
    theirs.observe(1.0)

    mine.merge(theirs)

    assert mine.counts[BOUNDS.index(0.0005)] == 2
    assert mine.counts[INF] == 1
    assert mine.sum == pytest.approx(1.0006)
    assert theirs.counts[BOUNDS.index(0.0005)] == 1  # unchanged


def test_a_histogram_survives_json_and_refuses_other_bounds():
    histogram = LatencyHistogram()
    histogram.observe(0.002)

    data = json.loads(json.dumps(histogram.to_dict()))
    again = LatencyHistogram.from_dict(data)

    assert (again.counts, again.sum) == (histogram.counts, histogram.sum)
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict({**data, "bounds": [0.001, 0.01]})


# Snapshots and merging


def test_a_snapshot_is_plain_json_with_everything():
    snapshot = busy_meters().snapshot(active_calls=4)

    assert json.loads(json.dumps(snapshot)) == snapshot
    assert isinstance(snapshot["pid"], int)
    assert isinstance(snapshot["writtenAt"], float)
    assert snapshot["activeCalls"] == 4
    assert snapshot["framesIn"] == 500
    assert snapshot["framesOut"] == 450
    assert snapshot["callerToModel"]["counts"][BOUNDS.index(0.001)] == 1
    assert snapshot["errors"] == {"bad_frame": 2, "store": 1}
    assert snapshot["callsEnded"] == [
        {"status": "completed", "reason": "caller_hung_up", "count": 1},
        {"status": "failed", "reason": "openai_unavailable", "count": 1},
    ]
    assert snapshot["outcomes"] == {"verified": 1}
    assert snapshot["refused"] == {"capacity": 1}


def test_merging_sums_every_count_and_histogram():
    one = busy_meters().snapshot(active_calls=4)
    other_meters = Meters()
    other_meters.frames_in = 10
    other_meters.caller_to_model.observe(0.001)
    other_meters.error("store")
    other_meters.error("openai_error")
    other_meters.call_ended("completed", "caller_hung_up")
    other = other_meters.snapshot(active_calls=1)

    merged = merge_snapshots([one, other], now=max(one["writtenAt"], other["writtenAt"]))

    assert merged["activeCalls"] == 5
    assert merged["framesIn"] == 510
    assert merged["framesOut"] == 450
    assert merged["bargeIns"] == 3
    assert merged["callerToModel"]["counts"][BOUNDS.index(0.001)] == 2
    assert merged["callerToModel"]["sum"] == pytest.approx(0.0063)
    assert merged["modelToCaller"]["counts"][INF] == 1
    assert merged["errors"] == {"bad_frame": 2, "store": 2, "openai_error": 1}
    assert merged["callsEnded"] == [
        {"status": "completed", "reason": "caller_hung_up", "count": 2},
        {"status": "failed", "reason": "openai_unavailable", "count": 1},
    ]
    assert merged["refused"] == {"capacity": 1}


def test_a_stale_workers_calls_are_not_live_but_its_counts_stay():
    fresh = {**busy_meters().snapshot(active_calls=4), "writtenAt": 1000.0}
    edge = {**Meters().snapshot(active_calls=2), "writtenAt": 995.0}
    dead = {**busy_meters().snapshot(active_calls=7), "writtenAt": 994.9}

    merged = merge_snapshots([fresh, edge, dead], now=1000.0, stale_after=5.0)

    assert merged["activeCalls"] == 6  # 4 + 2: exactly stale_after old still counts
    assert merged["framesIn"] == 1000  # the dead worker's counts included
    assert merged["errors"]["bad_frame"] == 4


def test_merging_nothing_gives_zeros():
    merged = merge_snapshots([], now=0.0)

    assert merged["activeCalls"] == 0
    assert merged["framesIn"] == 0
    assert merged["callerToModel"]["counts"] == [0] * (len(BOUNDS) + 1)
    assert merged["errors"] == {}


# The Prometheus text


def test_rendered_text_has_the_expected_families_labels_and_values():
    text = render(busy_meters().snapshot(active_calls=4))
    found = families(text)
    values = samples(text)

    assert {name: family.type for name, family in found.items()} == {
        "highway_active_calls": "gauge",
        "highway_frames": "counter",
        "highway_bridge_delay_seconds": "histogram",
        "highway_barge_ins": "counter",
        "highway_truncations": "counter",
        "highway_openai_reconnects": "counter",
        "highway_errors": "counter",
        "highway_calls_ended": "counter",
        "highway_verification_outcomes": "counter",
        "highway_calls_refused": "counter",
    }
    assert all(family.documentation for family in found.values())
    assert values["highway_active_calls", frozenset()] == 4
    assert values["highway_frames_total", frozenset({("direction", "in")})] == 500
    assert values["highway_frames_total", frozenset({("direction", "out")})] == 450
    assert values["highway_barge_ins_total", frozenset()] == 3
    assert values["highway_truncations_total", frozenset()] == 2
    assert values["highway_openai_reconnects_total", frozenset()] == 1
    assert values["highway_errors_total", frozenset({("kind", "bad_frame")})] == 2
    assert values["highway_errors_total", frozenset({("kind", "store")})] == 1
    ended = frozenset({("status", "failed"), ("reason", "openai_unavailable")})
    assert values["highway_calls_ended_total", ended] == 1
    assert values["highway_verification_outcomes_total", frozenset({("outcome", "verified")})] == 1
    assert values["highway_calls_refused_total", frozenset({("reason", "capacity")})] == 1


def test_rendered_buckets_are_cumulative_with_count_and_sum():
    text = render(busy_meters().snapshot(active_calls=0))
    values = samples(text)

    def bucket(leg: str, le: str) -> float:
        return values["highway_bridge_delay_seconds_bucket", frozenset({("leg", leg), ("le", le)})]

    # caller_to_model saw 0.3 ms, 1 ms and 4 ms.
    assert bucket("caller_to_model", "0.00025") == 0
    assert bucket("caller_to_model", "0.0005") == 1
    assert bucket("caller_to_model", "0.001") == 2
    assert bucket("caller_to_model", "0.0025") == 2
    assert bucket("caller_to_model", "0.005") == 3
    assert bucket("caller_to_model", "0.25") == 3
    assert bucket("caller_to_model", "+Inf") == 3
    assert bucket("model_to_caller", "0.25") == 0  # 300 ms is past the last bound
    assert bucket("model_to_caller", "+Inf") == 1
    leg = frozenset({("leg", "caller_to_model")})
    assert values["highway_bridge_delay_seconds_count", leg] == 3
    assert values["highway_bridge_delay_seconds_sum", leg] == pytest.approx(0.0053)
    assert b'highway_bridge_delay_seconds_bucket{le="5e-05",leg="caller_to_model"} 0.0' in text


def test_fresh_meters_show_both_directions_and_legs_at_zero():
    text = render(Meters().snapshot(active_calls=0))
    values = samples(text)

    for direction in ("in", "out"):
        assert values["highway_frames_total", frozenset({("direction", direction)})] == 0
    for leg in ("caller_to_model", "model_to_caller"):
        assert values["highway_bridge_delay_seconds_count", frozenset({("leg", leg)})] == 0
        le_values = {
            dict(labels)["le"]
            for name, labels in values
            if name == "highway_bridge_delay_seconds_bucket" and ("leg", leg) in labels
        }
        assert len(le_values) == len(BOUNDS) + 1
    # Open-ended label sets: documented, but no sample until one is seen.
    assert not families(text)["highway_errors"].samples
    assert b"# HELP highway_errors_total" in text


def test_a_merged_snapshot_renders_the_deployments_totals():
    one = {**busy_meters().snapshot(active_calls=4), "writtenAt": 100.0}
    two = {**busy_meters().snapshot(active_calls=3), "writtenAt": 99.0}

    values = samples(render(merge_snapshots([one, two], now=100.0)))

    assert values["highway_active_calls", frozenset()] == 7
    assert values["highway_frames_total", frozenset({("direction", "in")})] == 1000
    leg = frozenset({("leg", "caller_to_model")})
    assert values["highway_bridge_delay_seconds_count", leg] == 6


def test_rendering_leaves_the_global_registry_alone():
    render(busy_meters().snapshot(active_calls=1))

    assert CONTENT_TYPE == prometheus_client.CONTENT_TYPE_LATEST
    assert b"highway_" not in prometheus_client.generate_latest()


# Sharing between workers


def test_a_worker_replaces_its_own_file_and_reads_everyone_s(tmp_path: Path):
    share = WorkerShare(tmp_path)
    other = {**busy_meters().snapshot(active_calls=2), "pid": 1}
    (tmp_path / "worker-1.json").write_bytes(orjson.dumps(other))
    first = Meters().snapshot(active_calls=0)
    latest = busy_meters().snapshot(active_calls=5)

    share.write(first)
    share.write(latest)

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["worker-1.json", f"worker-{latest['pid']}.json"]
    )  # one file per worker, no temporary file left behind
    found = {snapshot["pid"]: snapshot for snapshot in share.read_all()}
    assert found == {1: other, latest["pid"]: latest}


def test_a_half_written_or_foreign_file_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    share = WorkerShare(tmp_path)
    good = busy_meters().snapshot(active_calls=1)
    share.write(good)
    (tmp_path / "worker-2.json").write_bytes(orjson.dumps(good)[:40])  # cut short
    (tmp_path / "worker-3.json").write_bytes(b'{"framesIn": 1}')  # not a snapshot
    (tmp_path / "worker-4.json").write_bytes(b"[]")

    with caplog.at_level(logging.WARNING, logger="highway.metrics"):
        assert share.read_all() == [good]

    assert len(caplog.records) == 3
    for name in ("worker-2.json", "worker-3.json", "worker-4.json"):
        assert f"skipped {name}" in caplog.text


def test_reading_an_empty_share_finds_nothing(tmp_path: Path):
    assert WorkerShare(tmp_path).read_all() == []
