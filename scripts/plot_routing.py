"""Plot `bench_routing.py` results: per fleet, arrival pattern and load, each front's TTFT
p50/p90/p99 and end-to-end p99 (all seeds pooled), as PNG files for `docs/benchmarks.md`.

Run: `.venv/bin/python scripts/plot_routing.py docs/data/routing-runs.jsonl docs/images/`.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from routing_results import Outcome, Report, ResultStore, RunKey

QUANTILES = (0.5, 0.9, 0.99)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (as bench_routing reports it)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def plot(runs: dict[RunKey, Report], out: Path) -> list[Path]:
    """One PNG per (fleet, pattern, load): bars of TTFT p50/p90/p99 and end-to-end p99."""
    groups: dict[tuple[str, str, bool, float], dict[str, list[Outcome]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for key, report in sorted(runs.items()):
        group = (key.fleet, key.pattern, key.disturbed, key.load)
        groups[group][key.front].extend(report.outcomes)
    written = []
    out.mkdir(parents=True, exist_ok=True)
    for (fleet, pattern, disturbed, load), fronts in sorted(groups.items()):
        names = list(fronts)
        figure, axes = plt.subplots(figsize=(8, 4))
        width = 0.8 / (len(QUANTILES) + 1)
        labels = [f"TTFT p{round(q * 100)}" for q in QUANTILES] + ["end-to-end p99"]
        for column, label in enumerate(labels):
            values = []
            for name in names:
                ok = [o for o in fronts[name] if o.status == "ok"]
                if column < len(QUANTILES):
                    values.append(quantile([o.ttft for o in ok], QUANTILES[column]))
                else:
                    values.append(quantile([o.total for o in ok], 0.99))
            positions = [index + (column - 1.5) * width for index in range(len(names))]
            axes.bar(positions, values, width, label=label)
        axes.set_xticks(range(len(names)), names)
        axes.set_ylabel("seconds")
        arrivals = pattern + (" + disturbed" if disturbed else "")
        axes.set_title(f"{fleet}, {arrivals}, {load:.0%} of capacity (all seeds pooled)")
        axes.legend()
        figure.tight_layout()
        suffix = f"{pattern}-" if pattern != "poisson" else ""
        suffix += "disturbed-" if disturbed else ""
        path = out / f"routing-{fleet}-{suffix}{round(load * 100)}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Read the results, write the PNGs, print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="bench_routing.py --results file")
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args(argv)
    for path in plot(ResultStore(args.results).runs, args.out):
        print(path)


if __name__ == "__main__":
    main()
