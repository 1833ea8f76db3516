"""The end-to-end benchmark's reporting: summaries, floor comparison, capacity and outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.e2e_report import (
    LEGS,
    capacity,
    make_run,
    markdown_table,
    over_floor,
    pair_runs,
    reference_table,
    summarise,
    write_outputs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# 101 evenly spaced samples from base to base + 1: p50 is base + 0.5, p99 base + 0.99.
SPREAD = np.linspace(0.0, 1.0, 101)


def leg_samples(base: float) -> list[float]:
    return [float(value) for value in base + SPREAD]


def a_run(
    target: str,
    mode: str = "pcmu",
    calls: int = 10,
    *,
    audio_ms: float = 1.0,
    lost: int = 0,
    reordered: int = 0,
    finalised: int | None = None,
    cpu_percent: float = 20.0,
) -> dict[str, Any]:
    """A run whose audio legs take audio_ms to audio_ms + 1 ms."""
    return make_run(
        target=target,
        mode=mode,
        calls=calls,
        seconds=30.0,
        samples={
            "caller_to_model": leg_samples(audio_ms),
            "model_to_caller": leg_samples(audio_ms),
            "barge_in": leg_samples(audio_ms + 2),
            "first_audio": leg_samples(100.0),
        },
        frames={"sent": 1000, "received": 1000 - lost, "lost": lost, "reordered": reordered},
        server={
            "cpu_percent": cpu_percent,
            "rss_mb": 80.0,
            "rss_growth_mb": 0.5,
            "harness_cpu_percent": 30.0,
            "steal_percent": 1.5,
        },
        calls_started=calls,
        calls_finalised=calls if finalised is None else finalised,
    )


def test_summarise_percentiles_and_cdf() -> None:
    summary = summarise(list(range(1, 101)))
    assert summary["count"] == 100
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == 100.0
    assert summary["mean"] == pytest.approx(50.5)
    assert len(summary["cdf"]) == 100
    assert summary["cdf"][0] == [1.0, 0.0]
    assert summary["cdf"][-1] == [100.0, 1.0]
    json.dumps(summary)  # plain floats, not numpy scalars


def test_summarise_caps_the_cdf_and_keeps_min_and_max() -> None:
    samples = np.random.default_rng(1).exponential(2.0, 10_000)
    cdf = summarise(samples.tolist())["cdf"]
    assert len(cdf) == 200
    assert cdf[0] == [samples.min(), 0.0]
    assert cdf[-1] == [samples.max(), 1.0]
    ms, fractions = zip(*cdf, strict=True)
    assert list(ms) == sorted(ms)
    assert list(fractions) == sorted(fractions)


def test_summarise_one_sample() -> None:
    summary = summarise([3.5])
    assert summary["count"] == 1
    assert summary["p50"] == summary["p99"] == summary["max"] == summary["mean"] == 3.5
    assert summary["cdf"] == [[3.5, 0.0], [3.5, 1.0]]


def test_summarise_empty() -> None:
    assert summarise([]) == {
        "count": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
        "mean": None,
        "cdf": [],
    }


def test_make_run_shape() -> None:
    run = make_run(
        target="highway",
        mode="pcm24k",
        calls=4,
        seconds=10.0,
        samples={"caller_to_model": [1.0, 2.0], "model_to_caller": [3.0]},
        frames={"sent": 10, "received": 10, "lost": 0, "reordered": 0},
        server={"cpu_percent": 50.0, "rss_mb": 70.0, "rss_growth_mb": 1.0},
        calls_started=4,
        calls_finalised=4,
    )
    assert run["target"] == "highway"
    assert run["mode"] == "pcm24k"
    assert run["calls"] == 4
    assert run["seconds"] == 10.0
    assert set(run["legs"]) == set(LEGS)
    assert run["legs"]["caller_to_model"]["count"] == 2
    assert run["legs"]["barge_in"]["count"] == 0
    assert run["frames"] == {"sent": 10, "received": 10, "lost": 0, "reordered": 0}
    assert run["server"] == {
        "cpu_percent": 50.0,
        "rss_mb": 70.0,
        "rss_growth_mb": 1.0,
        "cpu_per_call_percent": 12.5,
    }
    assert (run["calls_started"], run["calls_finalised"]) == (4, 4)
    json.dumps(run)


def test_make_run_without_server_or_calls() -> None:
    common: dict[str, Any] = {
        "target": "floor",
        "mode": "pcmu",
        "seconds": 1.0,
        "samples": {},
        "frames": {"sent": 0, "received": 0, "lost": 0, "reordered": 0},
        "calls_started": 0,
        "calls_finalised": 0,
    }
    assert make_run(calls=0, server=None, **common)["server"] is None
    idle = make_run(calls=0, server={"cpu_percent": 1.0, "rss_mb": 60.0}, **common)
    assert idle["server"] == {"cpu_percent": 1.0, "rss_mb": 60.0}


def test_make_run_rejects_an_unknown_leg() -> None:
    with pytest.raises(ValueError, match="caller_to_modle"):
        make_run(
            target="highway",
            mode="pcmu",
            calls=1,
            seconds=1.0,
            samples={"caller_to_modle": [1.0]},
            frames={"sent": 0, "received": 0, "lost": 0, "reordered": 0},
            server=None,
            calls_started=1,
            calls_finalised=1,
        )


def test_over_floor_subtracts_the_floor() -> None:
    added = over_floor(a_run("highway", audio_ms=3.0), a_run("floor", audio_ms=1.0))
    for leg in ("caller_to_model", "model_to_caller", "barge_in", "first_audio"):
        for stat in ("p50", "p95", "p99", "max"):
            assert added[leg][stat] == pytest.approx(0.0 if leg == "first_audio" else 2.0)


def test_over_floor_is_none_without_samples() -> None:
    floor = a_run("floor")
    floor["legs"]["barge_in"] = summarise([])
    added = over_floor(a_run("highway"), floor)
    assert added["barge_in"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert added["caller_to_model"]["p99"] == pytest.approx(0.0)


def test_pair_runs_matches_mode_and_calls_in_highway_order() -> None:
    floor_10 = a_run("floor", "pcmu", 10)
    floor_20 = a_run("floor", "pcmu", 20)
    highway_20 = a_run("highway", "pcmu", 20)
    highway_10 = a_run("highway", "pcmu", 10)
    highway_24k = a_run("highway", "pcm24k", 10)
    pairs = pair_runs([floor_10, highway_20, floor_20, highway_24k, highway_10])
    assert pairs == [(highway_20, floor_20), (highway_24k, None), (highway_10, floor_10)]


def load_points(mode: str, *highway: dict[str, Any]) -> list[dict[str, Any]]:
    """Each highway run preceded by a floor run of its mode and calls."""
    runs = []
    for run in highway:
        runs += [a_run("floor", mode, run["calls"]), run]
    return runs


def test_capacity_is_the_most_calls_that_qualify() -> None:
    runs = load_points(
        "pcmu",
        a_run("highway", "pcmu", 10, audio_ms=2.0),
        a_run("highway", "pcmu", 20, audio_ms=4.0),  # p99 over floor 3 ms
        a_run("highway", "pcmu", 40, audio_ms=5.0, lost=1),
        a_run("highway", "pcmu", 80, audio_ms=9.0),  # p99 over floor 8 ms
    )
    assert capacity(runs) == {"pcmu": 20}
    assert capacity(runs, budget_ms=10.0) == {"pcmu": 80}
    assert capacity(runs, budget_ms=2.0) == {"pcmu": 10}


@pytest.mark.parametrize(
    "failing",
    [
        {"audio_ms": 6.5},  # p99 over floor 5.5 ms
        {"lost": 1},
        {"reordered": 2},
        {"finalised": 9},
    ],
)
def test_capacity_disqualifies(failing: dict[str, Any]) -> None:
    runs = load_points(
        "pcmu", a_run("highway", "pcmu", 10), a_run("highway", "pcmu", 20, **failing)
    )
    assert capacity(runs) == {"pcmu": 10}


def test_capacity_is_none_when_nothing_qualifies() -> None:
    runs = [
        *load_points("pcmu", a_run("highway", "pcmu", 10, lost=3)),
        a_run("highway", "pcm24k", 10),  # no floor to compare with
    ]
    assert capacity(runs) == {"pcmu": None, "pcm24k": None}
    assert capacity([]) == {}


def table_rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]


def test_markdown_table_rows() -> None:
    runs = [
        *load_points(
            "pcmu",
            a_run("highway", "pcmu", 10, audio_ms=1.5, lost=2, reordered=1, cpu_percent=25.0),
        ),
        a_run("highway", "pcm24k", 5, finalised=4),
    ]
    runs[-1]["server"] = None
    header, alignment, pcmu, pcm24k = table_rows(markdown_table(runs))
    assert len(header) == len(alignment) == len(pcmu) == 14
    assert header[:2] == ["Mode", "Calls"]
    assert set(alignment[2:]) == {"---:"}
    assert pcmu == [
        "pcmu",
        "10",
        "2.00 / 2.49",
        "+0.50",
        "2.00 / 2.49",
        "+0.50",
        "+0.50",
        "100.5",
        "2 / 1",
        "25.0",
        "2.50",
        "80.0 (+0.50)",
        "30.0",
        "1.50",
    ]
    assert pcm24k[:4] == ["pcm24k", "5 (4/5 finalised)", "1.50 / 1.99", "–"]
    assert pcm24k[6:] == ["–", "100.5", "0 / 0", "–", "–", "–", "–", "–"]


def test_reference_relays_get_their_own_table() -> None:
    runs = [*load_points("pcmu", a_run("highway")), a_run("trio-relay", cpu_percent=12.5)]
    header, _, row = table_rows(reference_table(runs))
    assert header[:3] == ["Relay", "Mode", "Calls"]
    assert row == ["trio-relay", "pcmu", "10", "1.50 / 1.99", "1.50 / 1.99", "12.5", "1.25"]
    assert reference_table(load_points("pcmu", a_run("highway"))) == ""


def test_write_outputs(tmp_path: Path) -> None:
    runs = [
        *load_points("pcmu", a_run("highway", "pcmu", 10), a_run("highway", "pcmu", 20)),
        *load_points("pcm24k", a_run("highway", "pcm24k", 10, audio_ms=8.0)),
    ]
    results = {"machine": {"cpu": "test CPU", "python": "3.11"}, "command": "e2e.py", "runs": runs}
    out_dir = tmp_path / "out"
    paths = write_outputs(results, out_dir)

    assert set(paths) == {"json", "markdown", "latency_cdf", "p99_vs_calls", "cpu_vs_calls"}
    written = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert written["capacity"] == {"pcmu": 20, "pcm24k": None}
    assert written["runs"] == runs
    assert "capacity" not in results

    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "test CPU" in markdown
    assert "e2e.py" in markdown
    assert markdown_table(runs) in markdown
    assert "- pcmu: 20 calls" in markdown
    assert "- pcm24k: no load point qualified" in markdown

    for name in ("latency_cdf", "p99_vs_calls", "cpu_vs_calls"):
        assert paths[name] == out_dir / f"{name}.png"
        assert paths[name].read_bytes().startswith(PNG_SIGNATURE)


def test_write_outputs_with_missing_data(tmp_path: Path) -> None:
    highway = a_run("highway")
    highway["legs"] = {leg: summarise([]) for leg in LEGS}
    highway["server"] = None
    paths = write_outputs({"machine": {}, "command": "e2e.py", "runs": [highway]}, tmp_path)
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["capacity"] == {"pcmu": None}
    assert paths["cpu_vs_calls"].read_bytes().startswith(PNG_SIGNATURE)
