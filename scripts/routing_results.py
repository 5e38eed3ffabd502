"""Results of `bench_routing.py`: one record per run in a JSON-lines file, so that a grid too long
for one sitting is run piece by piece (runs already in the file are skipped), and the report
with the issue's targets checked per fleet, pattern, load and seed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROUND_ROBIN = "nginx-rr"
HAPROXY = "haproxy-leastconn"
OURS_PREFIX = "paddler-"


@dataclass(frozen=True)
class Outcome:
    """One request: how it ended and its timings (seconds from its arrival)."""

    status: str  # "ok", "rejected" (503 / RESOURCE_EXHAUSTED / UNAVAILABLE) or "error"
    ttft: float = math.nan
    total: float = math.nan
    tokens: int = 0


@dataclass(frozen=True, order=True)
class RunKey:
    """What one run measured: a front on a fleet, at a load, with one seed's arrivals."""

    fleet: str
    pattern: str  # "poisson" or "bursty"
    disturbed: bool  # a direct client kept the first server busy for the middle third
    load: float  # share of the fleet's measured capacity
    seed: int
    front: str


@dataclass(frozen=True)
class Report:
    """One run's outcomes, its wall time, and the CPU seconds the front's processes (balancer
    and agents, or proxy and llama-servers) and the load generator used (NaN: not measured)."""

    outcomes: tuple[Outcome, ...]
    wall: float
    servers_cpu_s: float = math.nan
    client_cpu_s: float = math.nan

    def count(self, status: str) -> int:
        """Requests that ended with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    def quantile_ms(self, field: str, q: float) -> float:
        """Nearest-rank percentile of ``field`` over the completed requests, in ms."""
        values = sorted(getattr(o, field) for o in self.outcomes if o.status == "ok")
        if not values:
            return math.nan
        value: float = values[max(0, math.ceil(q * len(values)) - 1)]
        return 1000 * value

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over the run's wall time."""
        return sum(o.tokens for o in self.outcomes) / self.wall

    def cpu_ms_per_token(self, cpu_s: float) -> float:
        """``cpu_s`` over the tokens generated, in ms."""
        return 1000 * cpu_s / max(sum(o.tokens for o in self.outcomes), 1)


class ResultStore:
    """The JSON-lines file: capacity records and run records, appended as they are measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[RunKey, Report] = {}
        self.capacities: dict[tuple[str, int], float] = {}  # (fleet, tokens) -> requests/s
        if path.exists():
            for line in path.read_text().splitlines():
                self._absorb(json.loads(line))

    def _absorb(self, record: dict[str, object]) -> None:
        if "capacity" in record:
            fleet, tokens = str(record["fleet"]), int(str(record["tokens"]))
            self.capacities[fleet, tokens] = float(str(record["capacity"]))
            return
        key = record["key"]
        outcomes = record["outcomes"]
        assert isinstance(key, dict) and isinstance(outcomes, list)
        cpu = record.get("cpu_s", {})
        assert isinstance(cpu, dict)
        self.runs[RunKey(**key)] = Report(
            tuple(Outcome(str(s), float(t), float(e), int(n)) for s, t, e, n in outcomes),
            float(str(record["wall"])),
            float(cpu.get("servers", math.nan)),
            float(cpu.get("client", math.nan)),
        )

    def _append(self, record: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        self._absorb(record)

    def add_capacity(self, fleet: str, tokens: int, capacity: float) -> None:
        """Record a fleet's measured capacity (the latest one counts)."""
        self._append({"fleet": fleet, "tokens": tokens, "capacity": round(capacity, 4)})

    def add_run(self, key: RunKey, report: Report) -> None:
        """Record one run."""
        outcomes = [
            [o.status, round(o.ttft, 4), round(o.total, 4), o.tokens] for o in report.outcomes
        ]
        cpu = {"servers": round(report.servers_cpu_s, 2), "client": round(report.client_cpu_s, 2)}
        self._append(
            {"key": asdict(key), "wall": round(report.wall, 3), "cpu_s": cpu, "outcomes": outcomes}
        )


def run_row(key: RunKey, report: Report) -> str:
    """One run as a markdown table row."""
    cells = [
        key.fleet, key.pattern + (" + disturbed" if key.disturbed else ""), f"{key.load:.0%}",
        str(key.seed), key.front, str(report.count("ok")), str(report.count("rejected")),
        str(report.count("error")),
        *(f"{report.quantile_ms('ttft', q):.0f}" for q in (0.5, 0.9, 0.99)),
        f"{report.quantile_ms('total', 0.99):.0f}", f"{report.tokens_per_second:.1f}",
        _ms(report.cpu_ms_per_token(report.servers_cpu_s)),
        _ms(report.cpu_ms_per_token(report.client_cpu_s)),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


RUN_HEADER = (
    "| fleet | arrivals | load | seed | front | completed | rejected | errors | TTFT p50 ms "
    "| TTFT p90 ms | TTFT p99 ms | end-to-end p99 ms | tok/s | CPU ms/token: front | client |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def target_misses(front: str, runs: dict[str, Report], load: float) -> list[str]:
    """The issue's targets that ``front`` (one of ours) missed in one situation (all fronts of
    one fleet, pattern, load and seed); the peers that did not run are not compared."""
    ours = runs[front]
    ttft = ours.quantile_ms("ttft", 0.99)
    misses = []
    if HAPROXY in runs and ttft > runs[HAPROXY].quantile_ms("ttft", 0.99):
        misses.append("TTFT p99 above haproxy's")
    if ROUND_ROBIN in runs:
        round_robin = runs[ROUND_ROBIN].quantile_ms("ttft", 0.99)
        if ttft > round_robin:
            misses.append("TTFT p99 above round robin's")
        elif load >= 0.75 and ttft > 0.5 * round_robin:
            misses.append("TTFT p99 above 0.5x round robin's")
    peers = [report for name, report in runs.items() if not name.startswith(OURS_PREFIX)]
    if peers and ours.quantile_ms("total", 0.99) > min(p.quantile_ms("total", 0.99) for p in peers):
        misses.append("end-to-end p99 above the best peer's")
    if peers and ours.count("rejected") > min(p.count("rejected") for p in peers):
        misses.append("more rejections than a peer")
    return misses


def summary(runs: dict[RunKey, Report]) -> str:
    """Per fleet, pattern and load: each front's TTFT p99 over the seeds, and for our fronts
    how many situations met every target."""
    situations: dict[tuple[str, str, bool, float, int], dict[str, Report]] = defaultdict(dict)
    for key, report in runs.items():
        situations[key.fleet, key.pattern, key.disturbed, key.load, key.seed][key.front] = report
    groups: dict[tuple[str, str, bool, float], list[int]] = defaultdict(list)
    for fleet, pattern, disturbed, load, seed in sorted(situations):
        groups[fleet, pattern, disturbed, load].append(seed)
    lines = [
        "| fleet | arrivals | load | front | TTFT p99 s per seed | end-to-end p99 s per seed "
        "| targets met |",
        "|---|---|---|---|---|---|---|",
    ]
    for (fleet, pattern, disturbed, load), seeds in sorted(groups.items()):
        fronts = sorted({f for s in seeds for f in situations[fleet, pattern, disturbed, load, s]})
        for front in fronts:
            cells = _per_seed(situations, (fleet, pattern, disturbed, load), seeds, front)
            lines.append(
                f"| {fleet} | {pattern}{' + disturbed' if disturbed else ''} | {load:.0%} "
                f"| {front} | {cells} |"
            )
    return "\n".join(lines)


def _per_seed(
    situations: dict[tuple[str, str, bool, float, int], dict[str, Report]],
    group: tuple[str, str, bool, float],
    seeds: Sequence[int],
    front: str,
) -> str:
    present = [(s, situations[(*group, s)]) for s in seeds if front in situations[(*group, s)]]
    ttft = " / ".join(f"{r[front].quantile_ms('ttft', 0.99) / 1000:.1f}" for _, r in present)
    total = " / ".join(f"{r[front].quantile_ms('total', 0.99) / 1000:.1f}" for _, r in present)
    if not front.startswith(OURS_PREFIX):
        return f"{ttft} | {total} | "
    compared = [runs for _, runs in present if any(not f.startswith(OURS_PREFIX) for f in runs)]
    missed = [target_misses(front, runs, group[3]) for runs in compared]
    notes = sorted({miss for misses in missed for miss in misses})
    met = sum(1 for misses in missed if not misses)
    return f"{ttft} | {total} | {met} of {len(compared)} seeds with peers" + (
        f" (missed: {'; '.join(notes)})" if notes else ""
    )


def report(runs: dict[RunKey, Report], keys: Iterable[RunKey] | None = None) -> str:
    """The per-run table (of ``keys``, or all runs) and the summary of all runs."""
    chosen = sorted(keys if keys is not None else runs)
    rows = "\n".join(run_row(key, runs[key]) for key in chosen if key in runs)
    return f"{RUN_HEADER}\n{rows}\n\n{summary(runs)}"
