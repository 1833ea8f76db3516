"""Reporting for the end-to-end benchmark: summaries, comparison with the floor, outputs.

Pure functions over plain, JSON-serialisable dicts. A run is one load point (mode, calls)
against one target: "floor" (a bare relay in Highway's place: the harness's own overhead)
or "highway". Latencies are in milliseconds. Matplotlib is imported only to draw plots.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LEGS = ("caller_to_model", "model_to_caller", "barge_in", "first_audio")
LEG_TITLES = {
    "caller_to_model": "caller → model",
    "model_to_caller": "model → caller",
    "barge_in": "barge-in (speech_started → clear)",
    "first_audio": "first audio (start → first media)",
}
# The legs whose added delay decides capacity.
AUDIO_LEGS = ("caller_to_model", "model_to_caller")
OVER_FLOOR_STATS = ("p50", "p95", "p99", "max")
BUDGET_MS = 5.0
MAX_CDF_POINTS = 200
MISSING = "–"

Run = dict[str, Any]


def summarise(samples: Sequence[float]) -> dict[str, Any]:
    """Count, percentiles, max, mean and a CDF of at most MAX_CDF_POINTS [ms, fraction]."""
    values = np.asarray(samples, dtype=float)
    if values.size == 0:
        return {
            "count": 0,
            **dict.fromkeys(("p50", "p95", "p99", "max", "mean")),
            "cdf": [],
        }
    p50, p95, p99 = np.percentile(values, [50, 95, 99], method="linear")
    fractions = np.linspace(0.0, 1.0, min(max(values.size, 2), MAX_CDF_POINTS))
    quantiles = np.quantile(values, fractions, method="linear")
    return {
        "count": int(values.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "cdf": [[float(ms), float(f)] for ms, f in zip(quantiles, fractions, strict=True)],
    }


def make_run(
    *,
    target: str,
    mode: str,
    calls: int,
    seconds: float,
    samples: Mapping[str, Sequence[float]],
    frames: Mapping[str, int],
    server: Mapping[str, float] | None,
    calls_started: int,
    calls_finalised: int,
) -> Run:
    """One load point's record; every leg is summarised (a leg without samples is empty)."""
    unknown = set(samples) - set(LEGS)
    if unknown:
        raise ValueError(f"unknown legs: {sorted(unknown)}")
    return {
        "target": target,
        "mode": mode,
        "calls": calls,
        "seconds": seconds,
        "legs": {leg: summarise(samples.get(leg, ())) for leg in LEGS},
        "frames": dict(frames),
        "server": _server_record(server, calls),
        "calls_started": calls_started,
        "calls_finalised": calls_finalised,
    }


def _server_record(server: Mapping[str, float] | None, calls: int) -> dict[str, float] | None:
    """A copy of the server's figures, with CPU per call when there were calls."""
    if server is None:
        return None
    record = dict(server)
    if calls > 0 and record.get("cpu_percent") is not None:
        record["cpu_per_call_percent"] = record["cpu_percent"] / calls
    return record


def over_floor(run: Run, floor: Run) -> dict[str, dict[str, float | None]]:
    """Per leg, what the run adds over the floor at p50, p95, p99 and max (None if unknown)."""
    return {
        leg: {
            stat: _difference(summary[stat], floor["legs"].get(leg, {}).get(stat))
            for stat in OVER_FLOOR_STATS
        }
        for leg, summary in run["legs"].items()
    }


def _difference(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def pair_runs(runs: list[Run]) -> list[tuple[Run, Run | None]]:
    """Each highway run with the floor run of the same mode and calls, if there is one."""
    floors: dict[tuple[str, int], Run] = {}
    for run in runs:
        if run["target"] == "floor":
            floors.setdefault((run["mode"], run["calls"]), run)
    return [
        (run, floors.get((run["mode"], run["calls"]))) for run in runs if run["target"] == "highway"
    ]


def capacity(runs: list[Run], *, budget_ms: float = BUDGET_MS) -> dict[str, int | None]:
    """Per mode, the most calls at which Highway stays within budget and loses nothing."""
    best: dict[str, int | None] = {}
    for run, floor in pair_runs(runs):
        current = best.setdefault(run["mode"], None)
        if floor is not None and qualifies(run, floor, budget_ms):
            best[run["mode"]] = run["calls"] if current is None else max(current, run["calls"])
    return best


def qualifies(run: Run, floor: Run, budget_ms: float = BUDGET_MS) -> bool:
    """p99 added delay under budget on both audio legs, no frame lost or reordered,
    every call finalised."""
    added = over_floor(run, floor)
    p99s = [added[leg]["p99"] for leg in AUDIO_LEGS]
    return (
        all(p99 is not None and p99 < budget_ms for p99 in p99s)
        and run["frames"]["lost"] == 0
        and run["frames"]["reordered"] == 0
        and run["calls_finalised"] == run["calls_started"]
    )


TABLE_HEADER = (
    "Mode",
    "Calls",
    "Caller→model p50 / p99 (ms)",
    "Caller→model p99 over floor (ms)",
    "Model→caller p50 / p99 (ms)",
    "Model→caller p99 over floor (ms)",
    "Barge-in p99 over floor (ms)",
    "First audio p50 (ms)",
    "Frames lost / reordered",
    "Server CPU (% of a core)",
    "CPU per call (%)",
    "RSS MB (growth)",
    "Harness CPU (%)",
    "CPU steal (%)",
)


def markdown_table(runs: list[Run]) -> str:
    """A Markdown table with one row per highway run, in the order given."""
    alignment = ("---",) * 2 + ("---:",) * (len(TABLE_HEADER) - 2)
    lines = [_table_line(TABLE_HEADER), _table_line(alignment)]
    lines += [_table_line(_table_row(run, floor)) for run, floor in pair_runs(runs)]
    return "\n".join(lines) + "\n"


def _table_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table_row(run: Run, floor: Run | None) -> tuple[str, ...]:
    legs = run["legs"]
    added = over_floor(run, floor) if floor is not None else {}
    server = run["server"] or {}

    def added_p99(leg: str) -> str:
        return _signed(added.get(leg, {}).get("p99"))

    def p50_p99(leg: str) -> str:
        return f"{_number(legs[leg]['p50'])} / {_number(legs[leg]['p99'])}"

    rss = _number(server.get("rss_mb"))
    if server.get("rss_growth_mb") is not None:
        rss += f" ({_signed(server['rss_growth_mb'])})"
    return (
        run["mode"],
        _calls_cell(run),
        p50_p99("caller_to_model"),
        added_p99("caller_to_model"),
        p50_p99("model_to_caller"),
        added_p99("model_to_caller"),
        added_p99("barge_in"),
        _number(legs["first_audio"]["p50"]),
        f"{run['frames']['lost']} / {run['frames']['reordered']}",
        _number(server.get("cpu_percent")),
        _number(server.get("cpu_per_call_percent")),
        rss,
        _number(server.get("harness_cpu_percent")),
        _number(server.get("steal_percent")),
    )


REFERENCE_HEADER = (
    "Relay",
    "Mode",
    "Calls",
    "Caller→model p50 / p99 (ms)",
    "Model→caller p50 / p99 (ms)",
    "Server CPU (% of a core)",
    "CPU per call (%)",
)


def reference_table(runs: list[Run]) -> str:
    """The runs of relays other than Highway and the floor (for comparison), or ""."""
    others = [run for run in runs if run["target"] not in ("highway", "floor")]
    if not others:
        return ""
    alignment = ("---",) * 3 + ("---:",) * (len(REFERENCE_HEADER) - 3)
    lines = [_table_line(REFERENCE_HEADER), _table_line(alignment)]
    for run in others:
        legs, server = run["legs"], run["server"] or {}
        lines.append(
            _table_line(
                (
                    run["target"],
                    run["mode"],
                    str(run["calls"]),
                    *(
                        f"{_number(legs[leg]['p50'])} / {_number(legs[leg]['p99'])}"
                        for leg in AUDIO_LEGS
                    ),
                    _number(server.get("cpu_percent")),
                    _number(server.get("cpu_per_call_percent")),
                )
            )
        )
    return "\n".join(lines) + "\n"


def _calls_cell(run: Run) -> str:
    """The number of calls, noting any call that was started but not finalised."""
    if run["calls_finalised"] == run["calls_started"]:
        return str(run["calls"])
    return f"{run['calls']} ({run['calls_finalised']}/{run['calls_started']} finalised)"


def _number(value: float | None) -> str:
    """Two decimals below 10, one from there on; a dash when missing."""
    if value is None:
        return MISSING
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _signed(value: float | None) -> str:
    """Like _number, with an explicit sign: for differences."""
    if value is None:
        return MISSING
    return f"{value:+.2f}" if abs(value) < 10 else f"{value:+.1f}"


def write_plots(runs: list[Run], out_dir: Path) -> list[Path]:
    """Draw latency_cdf.png, p99_vs_calls.png and cpu_vs_calls.png; return their paths."""
    from matplotlib.figure import Figure  # without pyplot: no global state, no GUI backend

    drawings = {
        "latency_cdf.png": _draw_latency_cdf,
        "p99_vs_calls.png": _draw_p99_vs_calls,
        "cpu_vs_calls.png": _draw_cpu_vs_calls,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in drawings.items():
        figure = Figure(figsize=(10, 7), layout="constrained")
        draw(figure, runs)
        path = out_dir / name
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths


def _busiest_pairs(runs: list[Run]) -> dict[str, tuple[Run, Run | None]]:
    """Per mode, the highway run with the most calls and its floor."""
    busiest: dict[str, tuple[Run, Run | None]] = {}
    for run, floor in pair_runs(runs):
        if run["mode"] not in busiest or run["calls"] > busiest[run["mode"]][0]["calls"]:
            busiest[run["mode"]] = (run, floor)
    return busiest


def _draw_latency_cdf(figure: Figure, runs: list[Run]) -> None:
    """One subplot per leg: per mode, the busiest highway run's CDF (solid) and its floor's."""
    busiest = _busiest_pairs(runs)
    for axes, leg in zip(figure.subplots(2, 2).flat, LEGS, strict=True):
        for index, (mode, (run, floor)) in enumerate(sorted(busiest.items())):
            colour = f"C{index}"
            _plot_cdf(axes, run, leg, colour, "-", f"{mode} highway ({run['calls']} calls)")
            if floor is not None:
                _plot_cdf(axes, floor, leg, colour, "--", f"{mode} floor")
        axes.set(title=LEG_TITLES[leg], xlabel="latency (ms)", ylabel="fraction of samples")
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")


def _plot_cdf(axes: Axes, run: Run, leg: str, colour: str, style: str, label: str) -> None:
    cdf = run["legs"][leg]["cdf"]
    if cdf:
        ms, fractions = zip(*cdf, strict=True)
        axes.plot(ms, fractions, color=colour, linestyle=style, label=label)


def _draw_p99_vs_calls(figure: Figure, runs: list[Run]) -> None:
    """p99 added over the floor against calls: a colour per mode, a line style per leg."""
    axes = figure.subplots()
    points: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for run, floor in pair_runs(runs):
        if floor is None:
            continue
        added = over_floor(run, floor)
        for leg in AUDIO_LEGS:
            if added[leg]["p99"] is not None:
                points.setdefault((run["mode"], leg), []).append((run["calls"], added[leg]["p99"]))
    colours = {mode: f"C{index}" for index, mode in enumerate(sorted({m for m, _ in points}))}
    styles = dict(zip(AUDIO_LEGS, ("-", ":"), strict=True))
    for (mode, leg), series in sorted(points.items()):
        calls, p99s = zip(*sorted(series), strict=True)
        axes.plot(
            calls,
            p99s,
            color=colours[mode],
            linestyle=styles[leg],
            marker="o",
            label=f"{mode}: {LEG_TITLES[leg]}",
        )
    axes.axhline(BUDGET_MS, color="black", linestyle="--", label=f"budget ({BUDGET_MS:g} ms)")
    axes.set(
        title="p99 latency Highway adds over the bare relay",
        xlabel="concurrent calls",
        ylabel="p99 over floor (ms)",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def _draw_cpu_vs_calls(figure: Figure, runs: list[Run]) -> None:
    """Highway's CPU use against calls, per mode."""
    axes = figure.subplots()
    points: dict[str, list[tuple[int, float]]] = {}
    for run, _floor in pair_runs(runs):
        if run["server"] is not None and run["server"].get("cpu_percent") is not None:
            points.setdefault(run["mode"], []).append((run["calls"], run["server"]["cpu_percent"]))
    for mode, series in sorted(points.items()):
        calls, cpu = zip(*sorted(series), strict=True)
        axes.plot(calls, cpu, marker="o", label=mode)
    axes.set(
        title="Highway server CPU (pinned to one core)",
        xlabel="concurrent calls",
        ylabel="CPU (% of one core)",
    )
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small")


def write_outputs(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write results.json (with capacity added), results.md and the plots; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "capacity": capacity(results["runs"])}
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(_markdown_report(results), encoding="utf-8")
    for path in write_plots(results["runs"], out_dir):
        paths[path.stem] = path
    return paths


def _markdown_report(results: dict[str, Any]) -> str:
    """The header (machine, command), the table and the capacity per mode."""
    machine = "\n".join(f"- {key}: {value}" for key, value in results["machine"].items())
    capacity_lines = "\n".join(
        f"- {mode}: {_capacity_text(calls)}" for mode, calls in results["capacity"].items()
    )
    return (
        "# Highway end-to-end benchmark\n\n"
        f"{machine}\n\n"
        f"Command: `{results['command']}`\n\n"
        "Latencies in ms. “Over floor” is Highway's figure minus the bare relay's at the same"
        " mode and calls: the delay Highway adds. Harness CPU is the load generator's own"
        " (one core); CPU steal is time the hypervisor took from the server's core, noise"
        " that no code can help.\n\n"
        f"{markdown_table(results['runs'])}\n"
        "## Capacity (calls per core)\n\n"
        f"Most calls with p99 added delay under {BUDGET_MS:g} ms on caller → model and"
        " model → caller, no frame lost or reordered and every call finalised.\n\n"
        f"{capacity_lines}\n"
        + (
            f"\n## Reference relays\n\n{references}"
            if (references := reference_table(results["runs"]))
            else ""
        )
    )


def _capacity_text(calls: int | None) -> str:
    return "no load point qualified" if calls is None else f"{calls} calls"
