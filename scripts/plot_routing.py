"""Plot `bench_routing.py --json` results: per fleet and load, each front's TTFT distribution
(p50, p90, p99 over the seeds) and end-to-end p99, as PNG files for `docs/benchmarks.md`.

Run: `.venv/bin/python scripts/plot_routing.py RESULTS.json docs/images/` (see `--help`).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

QUANTILES = (0.5, 0.9, 0.99)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (as bench_routing reports it)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def plot(runs: list[dict[str, object]], out: Path) -> list[Path]:
    """One PNG per (fleet, load): bars of TTFT p50/p90/p99 and end-to-end p99 per front."""
    groups: dict[tuple[str, float], dict[str, list[list[object]]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for run in runs:
        outcomes = run["outcomes"]
        assert isinstance(outcomes, list)
        key = (str(run["fleet"]), float(str(run["load"])))
        groups[key][str(run["front"])].extend(outcomes)
    written = []
    out.mkdir(parents=True, exist_ok=True)
    for (fleet, load), fronts in sorted(groups.items()):
        names = list(fronts)
        figure, axes = plt.subplots(figsize=(8, 4))
        width = 0.8 / (len(QUANTILES) + 1)
        labels = [f"TTFT p{round(q * 100)}" for q in QUANTILES] + ["end-to-end p99"]
        for column, label in enumerate(labels):
            values = []
            for name in names:
                ok = [o for o in fronts[name] if o[0] == "ok"]
                if column < len(QUANTILES):
                    values.append(quantile([float(str(o[1])) for o in ok], QUANTILES[column]))
                else:
                    values.append(quantile([float(str(o[2])) for o in ok], 0.99))
            positions = [index + (column - 1.5) * width for index in range(len(names))]
            axes.bar(positions, values, width, label=label)
        axes.set_xticks(range(len(names)), names)
        axes.set_ylabel("seconds")
        axes.set_title(f"{fleet}, {load:.0%} of capacity (all seeds pooled)")
        axes.legend()
        figure.tight_layout()
        path = out / f"routing-{fleet}-{round(load * 100)}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Read the JSON, write the PNGs, print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="bench_routing.py --json output")
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args(argv)
    for path in plot(json.loads(args.results.read_text()), args.out):
        print(path)


if __name__ == "__main__":
    main()
