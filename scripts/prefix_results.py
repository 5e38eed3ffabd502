"""The results of `bench_prefix.py`: one request's outcome, a results file's rows, and the tables
(per front and seed, with the ratios of our TTFT p50 to the peers' the issue compares with)."""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from routing_fronts import HAPROXY_STICKY, NGINX_LEAST_CONN
from routing_results import HAPROXY

PADDLER = "paddler"
ROUND_ROBIN = "nginx-round-robin"
PEERS = (ROUND_ROBIN, NGINX_LEAST_CONN, HAPROXY, HAPROXY_STICKY)
FRONTS = (PADDLER, *PEERS)
COMPARED = (ROUND_ROBIN, HAPROXY_STICKY)  # the peers our TTFT p50 is divided by
HEADER = (
    "| front | seed | completed | rejected | errors | TTFT p50 s | p90 s | p99 s "
    "| later rounds p50 s | end-to-end p99 s | tok/s | cached ratio | tool-call replies |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


@dataclass(frozen=True)
class Result:
    """One request: its user and round (from 1), how it ended (ok, rejected, error), seconds to
    the first generated piece and to the end, its usage's token counts, and the tool calls its
    reply made (a call comes whole: our agents hold one back until it parses)."""

    session: str
    round: int
    status: str
    ttft: float = math.nan
    total: float = math.nan
    prompt: int = 0
    cached: int = 0
    completion: int = 0
    calls: int = 0


def row_of(result: Result) -> list[object]:
    """A result as its results-file row (JSON has no NaN: null)."""
    return [
        (round(v, 4) if math.isfinite(v) else None) if isinstance(v, float) else v
        for v in asdict(result).values()
    ]


def result_of(row: Sequence[Any]) -> Result:
    """A results-file row as a result."""
    session, number, status, ttft, total, prompt, cached, completion, calls = row
    return Result(
        str(session), int(number), str(status),
        math.nan if ttft is None else float(ttft), math.nan if total is None else float(total),
        int(prompt), int(cached), int(completion), int(calls),
    )  # fmt: skip


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (NaN when there are no values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


@dataclass(frozen=True)
class Stats:
    """One front's figures over some runs' results; a request not served counts as slower than
    any served one (infinite)."""

    results: tuple[Result, ...]
    wall: float

    def count(self, status: str) -> int:
        """Requests that ended with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def completed(self) -> int:
        """Requests served."""
        return self.count("ok")

    def ttft(self, q: float, first_round: int = 1) -> float:
        """TTFT percentile in seconds over the rounds from ``first_round`` on."""
        chosen = [r for r in self.results if r.round >= first_round]
        return quantile([r.ttft if r.status == "ok" else math.inf for r in chosen], q)

    def total(self, q: float) -> float:
        """End-to-end percentile in seconds."""
        return quantile([r.total if r.status == "ok" else math.inf for r in self.results], q)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over the wall time."""
        return sum(r.completion for r in self.results) / self.wall if self.wall else math.nan

    @property
    def cached_ratio(self) -> float:
        """Prompt tokens served from a cache over all prompt tokens of the served requests."""
        served = [r for r in self.results if r.status == "ok"]
        prompt = sum(r.prompt for r in served)
        return sum(r.cached for r in served) / prompt if prompt else math.nan


def seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "∞" if math.isinf(value) else f"{value:.2f}"


def _ratio(ours: float, theirs: float) -> str:
    """``ours / theirs``; "-" where it says nothing (both not served, or none ran)."""
    if (
        math.isnan(ours)
        or math.isnan(theirs)
        or not theirs
        or (math.isinf(ours) and math.isinf(theirs))
    ):
        return "-"
    return "∞" if math.isinf(ours) else f"{ours / theirs:.2f}x"


def _order(front: str) -> tuple[int, str]:
    """Ours first, then the peers in FRONTS order."""
    base = PADDLER if front.startswith(PADDLER) else front
    return (FRONTS.index(base) if base in FRONTS else len(FRONTS), front)


def report(records: Sequence[dict[str, Any]]) -> str:
    """Per workload and setting: a row per front and seed (and all seeds pooled, for a front
    that ran them all), then our TTFT p50 over the compared peers'. A later record of one run
    replaces an earlier one."""
    runs: dict[tuple[str, str], dict[tuple[str, str], Stats]] = defaultdict(dict)
    for record in records:
        results = tuple(result_of(row) for row in record["results"])
        group = (record["workload"], record["setting"])
        runs[group][record["front"], str(record["seed"])] = Stats(results, record["wall"])
    sections = []
    for (workload, described), stats in runs.items():
        fronts = sorted({front for front, _ in stats}, key=_order)
        seeds = sorted({seed for _, seed in stats}, key=int)
        if len(seeds) > 1:
            for front in fronts:
                pooled = [stats[front, seed] for seed in seeds if (front, seed) in stats]
                if len(pooled) == len(seeds):
                    joined = tuple(r for s in pooled for r in s.results)
                    stats[front, "all"] = Stats(joined, sum(s.wall for s in pooled))
            seeds.append("all")
        rows = [
            _stats_row(front, seed, stats[front, seed])
            for front in fronts
            for seed in seeds
            if (front, seed) in stats
        ]
        section = f"### {workload}: {described}\n\n{HEADER}\n" + "\n".join(rows)
        ratios = [
            _ratio_row(front, seed, stats)
            for front in fronts
            if front.startswith(PADDLER)
            for seed in seeds
            if (front, seed) in stats
        ]
        if ratios:
            peers = " | ".join(f"ours / {peer}" for peer in COMPARED)
            section += f"\n\nTTFT p50\n\n| front | seed | {peers} |\n|---|---|---|---|\n"
            section += "\n".join(ratios)
        sections.append(section)
    return "\n\n".join(sections)


def _stats_row(front: str, seed: str, s: Stats) -> str:
    cells = [
        front, seed, str(s.completed), str(s.count("rejected")), str(s.count("error")),
        *(seconds(s.ttft(q)) for q in (0.5, 0.9, 0.99)), seconds(s.ttft(0.5, first_round=2)),
        seconds(s.total(0.99)), f"{s.tokens_per_second:.1f}", f"{s.cached_ratio:.2f}",
        str(sum(1 for r in s.results if r.calls)),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _ratio_row(front: str, seed: str, stats: dict[tuple[str, str], Stats]) -> str:
    ours = stats[front, seed].ttft(0.5)
    cells = [
        _ratio(ours, stats[peer, seed].ttft(0.5)) if (peer, seed) in stats else "-"
        for peer in COMPARED
    ]
    return f"| {front} | {seed} | {' | '.join(cells)} |"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The run records of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
