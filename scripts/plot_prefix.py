"""Plot `bench_prefix.py` results: per workload, each front's TTFT p50/p90/p99 (seeds pooled; a
request not served counts as never served, drawn to the top) beside its cached-token ratio, as
PNG files for `docs/benchmarks.md`.

Run: `.venv/bin/python scripts/plot_prefix.py docs/data/prefix-runs.jsonl docs/images/`.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefix_results import FRONTS, Result, Stats, read_records, result_of

QUANTILES = (0.5, 0.9, 0.99)


def _pooled(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Stats]]:
    """Per workload, each front's results over every seed (a rerun replaces the older run)."""
    runs: dict[tuple[str, str, str], tuple[tuple[Result, ...], float]] = {}
    for record in records:
        results = tuple(result_of(row) for row in record["results"])
        runs[record["workload"], record["front"], str(record["seed"])] = results, record["wall"]
    pooled: dict[str, dict[str, list[Result]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    walls: dict[tuple[str, str], float] = collections.defaultdict(float)
    seeds: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for (workload, front, seed), (results, wall) in runs.items():
        pooled[workload][front].extend(results)
        walls[workload, front] += wall
        seeds[workload, front].append(seed)
    most = max((len(each) for each in seeds.values()), default=0)
    return {
        workload: {
            _label(front, seeds[workload, front], most): Stats(
                tuple(results), walls[workload, front]
            )
            for front, results in f.items()
        }
        for workload, f in pooled.items()
    }


def _label(front: str, seeds: list[str], most: int) -> str:
    """The front's name, with its seeds when it ran fewer than the ``most`` any front ran (its
    pooled figures then cover other arrivals)."""
    if len(seeds) == most:
        return front
    return f"{front}\n(seed {', '.join(sorted(seeds, key=int))})"


def _order(front: str) -> tuple[int, str]:
    name = front.split("\n", maxsplit=1)[0]
    base = name.split("-", maxsplit=1)[0] if name.startswith("paddler") else name
    return (FRONTS.index(base) if base in FRONTS else len(FRONTS), front)


def plot(records: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per workload: TTFT bars (left axis) and the cached ratio (right axis)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for workload, fronts in sorted(_pooled(records).items()):
        names = sorted(fronts, key=_order)
        figure, axes = plt.subplots(figsize=(9, 4))
        served = [
            value
            for stats in fronts.values()
            for q in QUANTILES
            if math.isfinite(value := stats.ttft(q))
        ]
        ceiling = 1.1 * max(served, default=1.0)
        width = 0.8 / len(QUANTILES)
        for column, q in enumerate(QUANTILES):
            values = [min(fronts[name].ttft(q), ceiling) for name in names]
            positions = [index + (column - 1) * width for index in range(len(names))]
            axes.bar(positions, values, width, label=f"TTFT p{round(q * 100)}")
        axes.set_xticks(range(len(names)), names, fontsize=8)
        axes.set_ylabel("seconds")
        axes.set_ylim(0, ceiling)
        ratio = axes.twinx()
        ratio.plot(
            range(len(names)), [fronts[name].cached_ratio for name in names], "ko", label="cached"
        )
        ratio.set_ylim(0, 1)
        ratio.set_ylabel("prompt tokens from a cache")
        axes.set_title(f"{workload} (seeds pooled)")
        axes.legend(loc="upper left", fontsize=8)
        ratio.legend(loc="upper right", fontsize=8)
        figure.tight_layout()
        path = out / f"prefix-{workload}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Read the results, write the PNGs, print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="bench_prefix.py --results file")
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args(argv)
    for path in plot(read_records(args.results), args.out):
        print(path)


if __name__ == "__main__":
    main()
