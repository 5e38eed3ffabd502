"""Benchmark the paddler agent against `llama-server` on the same GGUF, threads and slots.

Builds `llama-server` from the llama.cpp vendored in the llama-cpp-python sdist (cached), then
runs each server alone and drives it with the same closed-loop load at each concurrency: the same
prompts, the same number of generated tokens per request. Prints a markdown table with aggregate
tokens/s, time to first token p50/p99 and the ratio agent / llama-server.

`--side-by-side N` runs N copies of each server at once on the machine instead, each driven with
the same load, as servers of a fleet share a host, and prints per-request decode speed and where
the CPU went: seconds per generated token by thread name, wake-ups and preemptions.

Run: `.venv/bin/python scripts/bench_agent.py` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from paddler.agent.default_model import default_model_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_servers import (
    AGENT,
    LLAMA_SERVER,
    PROMPTS,
    RequestFn,
    Sample,
    Server,
    add_placement_arguments,
    log,
    serving_agent,
    serving_llama_server,
)
from llama_server_build import DEFAULT_CACHE_DIR, ensure_llama_server
from thread_cpu import ThreadUse, process_cpu_s, read_threads, use_by_name

TARGET_RATIO = 0.9


@dataclass(frozen=True)
class RunResult:
    """One server at one concurrency."""

    samples: tuple[Sample, ...]
    wall: float
    retries: int

    @property
    def tokens_per_second(self) -> float:
        return sum(s.tokens for s in self.samples) / self.wall

    def ttft_ms(self, quantile: float) -> float:
        """Nearest-rank percentile of the time to first token, in milliseconds."""
        ordered = sorted(s.ttft for s in self.samples)
        return 1000 * ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]

    @property
    def mean_tokens(self) -> float:
        return sum(s.tokens for s in self.samples) / len(self.samples)


async def closed_loop(request: RequestFn, concurrency: int, per_worker: int) -> RunResult:
    """`concurrency` workers, each sending `per_worker` requests back to back."""

    async def worker(index: int) -> list[tuple[Sample, int]]:
        return [
            await request(PROMPTS[(index + i * concurrency) % len(PROMPTS)])
            for i in range(per_worker)
        ]

    start = time.perf_counter()
    per_worker_results = await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    flat = [r for results in per_worker_results for r in results]
    return RunResult(tuple(s for s, _ in flat), wall, sum(n for _, n in flat))


async def measure(
    name: str, send: RequestFn, concurrencies: Sequence[int], per_worker: int
) -> dict[int, RunResult]:
    """One warm-up request, then the closed loop at each concurrency.

    Every prompt starts with a new number, so no server reuses a cached prompt (llama-server
    runs with `cache_prompt` off; the agent would otherwise reuse a slot's cached prefix).
    """
    numbers = itertools.count()

    async def request(prompt: str) -> tuple[Sample, int]:
        return await send(f"{next(numbers):04d}. {prompt}")

    await request(PROMPTS[0])
    results: dict[int, RunResult] = {}
    for concurrency in concurrencies:
        result = await closed_loop(request, concurrency, per_worker)
        log(
            f"{name} c={concurrency}: {result.tokens_per_second:.1f} tok/s, "
            f"TTFT p50 {result.ttft_ms(0.5):.0f} ms p99 {result.ttft_ms(0.99):.0f} ms, "
            f"{result.mean_tokens:.1f} tokens/request, {result.retries} retries"
        )
        results[concurrency] = result
    return results


async def bench_llama_server(
    binary: Path, args: argparse.Namespace, log_dir: Path
) -> dict[int, RunResult]:
    """One llama-server alone, measured."""
    async with serving_llama_server(binary, args, log_dir) as server:
        return await measure(
            server.name, server.request, args.concurrency, args.requests_per_worker
        )


async def bench_agent(args: argparse.Namespace, log_dir: Path) -> dict[int, RunResult]:
    """One agent alone, measured."""
    async with serving_agent(args, log_dir) as server:
        return await measure(
            server.name, server.request, args.concurrency, args.requests_per_worker
        )


@dataclass(frozen=True)
class SharedRun:
    """Servers of one kind run at once at one concurrency: each one's result and CPU use."""

    results: tuple[RunResult, ...]
    cpu_s: tuple[float, ...]  # whole process, per server
    threads: dict[str, ThreadUse]  # all servers' threads, by name

    @property
    def tokens(self) -> int:
        return sum(s.tokens for r in self.results for s in r.samples)

    @property
    def tokens_per_second(self) -> float:
        return sum(r.tokens_per_second for r in self.results)

    @property
    def decode_median(self) -> float:
        """Median of the requests' own decode speeds, tokens/s."""
        return statistics.median(
            s.decode_tokens_per_second for r in self.results for s in r.samples
        )


async def measure_together(
    servers: Sequence[Server], concurrencies: Sequence[int], per_worker: int
) -> dict[int, SharedRun]:
    """Warm every server up, then at each concurrency load all of them at once."""
    numbers = itertools.count()

    def numbered(send: RequestFn) -> RequestFn:
        async def request(prompt: str) -> tuple[Sample, int]:
            return await send(f"{next(numbers):04d}. {prompt}")

        return request

    requests = [numbered(server.request) for server in servers]
    await asyncio.gather(*(request(PROMPTS[0]) for request in requests))
    runs: dict[int, SharedRun] = {}
    for concurrency in concurrencies:
        before = [read_threads(server.pid) for server in servers]
        cpu_before = [process_cpu_s(server.pid) for server in servers]
        results = await asyncio.gather(
            *(closed_loop(request, concurrency, per_worker) for request in requests)
        )
        threads: dict[str, ThreadUse] = {}
        for server, then in zip(servers, before, strict=True):
            for name, use in use_by_name(then, read_threads(server.pid)).items():
                threads[name] = threads.get(name, ThreadUse()) + use
        cpu = tuple(
            process_cpu_s(server.pid) - then
            for server, then in zip(servers, cpu_before, strict=True)
        )
        run = SharedRun(tuple(results), cpu, threads)
        log(
            f"{servers[0].name} x{len(servers)} c={concurrency}: {run.tokens_per_second:.1f} tok/s "
            f"in all, per-request decode median {run.decode_median:.1f} tok/s, "
            f"CPU {1000 * sum(cpu) / run.tokens:.1f} ms per token"
        )
        runs[concurrency] = run
    return runs


async def bench_side_by_side(
    kind: str, args: argparse.Namespace, log_dir: Path, binary: Path | None
) -> dict[int, SharedRun]:
    """``args.side_by_side`` servers of ``kind`` at once, measured together."""
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for index in range(args.side_by_side):
            name = f"{kind}-{index + 1}"
            if kind == LLAMA_SERVER:
                assert binary is not None
                block = serving_llama_server(binary, args, log_dir, name)
            else:
                block = serving_agent(args, log_dir, name)
            servers.append(await stack.enter_async_context(block))
        return await measure_together(servers, args.concurrency, args.requests_per_worker)


def side_by_side_table(concurrencies: Sequence[int], runs: dict[str, dict[int, SharedRun]]) -> str:
    """Per kind and concurrency: speed, CPU per token, and the threads that used the most."""
    header = [
        "Servers", "Concurrency", "tok/s (all)", "per-request decode tok/s (median)",
        "CPU ms / token", "top threads: CPU ms / token (wake-ups, preemptions per token)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind, by_concurrency in runs.items():
        for c in concurrencies:
            run = by_concurrency[c]
            top = [
                f"{name} {1000 * use.cpu_s / run.tokens:.1f} "
                f"({use.wakeups / run.tokens:.1f}, {use.preemptions / run.tokens:.2f})"
                for name, use in sorted(run.threads.items(), key=lambda kv: -kv[1].cpu_s)[:4]
            ]
            row = [
                f"{kind} x{len(run.results)}", str(c), f"{run.tokens_per_second:.1f}",
                f"{run.decode_median:.1f}", f"{1000 * sum(run.cpu_s) / run.tokens:.1f}",
                "; ".join(top),
            ]  # fmt: skip
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def best_of(rounds: list[dict[int, RunResult]]) -> dict[int, RunResult]:
    """Per concurrency, the round with the highest throughput (empty if nothing ran)."""
    if not rounds:
        return {}
    return {c: max((r[c] for r in rounds), key=lambda r: r.tokens_per_second) for c in rounds[0]}


def markdown_table(
    concurrencies: Sequence[int],
    baseline: dict[int, RunResult],
    agent: dict[int, RunResult],
) -> str:
    """Side-by-side table; columns for a server that was not run are left out."""
    header = ["Concurrency"]
    if baseline:
        header += ["llama-server tok/s", "llama-server TTFT p50 / p99 (ms)"]
    if agent:
        header += ["agent tok/s", "agent TTFT p50 / p99 (ms)"]
    if baseline and agent:
        header += [f"ratio agent / llama-server (target >= {TARGET_RATIO})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in concurrencies:
        row = [str(c)]
        for results in (baseline, agent):
            if results:
                r = results[c]
                row += [
                    f"{r.tokens_per_second:.1f}",
                    f"{r.ttft_ms(0.5):.0f} / {r.ttft_ms(0.99):.0f}",
                ]
        if baseline and agent:
            ratio = agent[c].tokens_per_second / baseline[c].tokens_per_second
            row.append(f"{ratio:.2f} {'ok' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(
    args: argparse.Namespace, baseline: dict[int, RunResult], agent: dict[int, RunResult]
) -> str:
    """Setup line, plus a warning when the servers generated different numbers of tokens."""
    text = (
        f"Model `{args.model.name}`, {args.threads} threads, {args.slots} slots, "
        f"context {args.context_size} per slot, {args.tokens} tokens per request, "
        f"{args.requests_per_worker} requests per worker, closed loop, one server at a time, "
        f"best of {args.rounds} round(s)."
    )
    if args.n_gpu_layers is not None or args.flash_attention is not None:
        text += (
            f" GPU layers {args.n_gpu_layers or 'unset'}, "
            f"flash attention {args.flash_attention or 'unset'} on both servers."
        )
    for c in args.concurrency:
        if baseline and agent and baseline[c].mean_tokens != agent[c].mean_tokens:
            text += (
                f"\nConcurrency {c}: tokens per request differ (llama-server "
                f"{baseline[c].mean_tokens:.1f}, agent {agent[c].mean_tokens:.1f}); "
                "tokens/s counts generated tokens either way."
            )
        if agent and agent[c].retries:
            text += (
                f"\nConcurrency {c}: the agent answered RESOURCE_EXHAUSTED "
                f"{agent[c].retries} times (retried)."
            )
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF (default: SmolLM2-135M Q4_1)"
    )
    parser.add_argument("--slots", type=int, default=8, help="agent slots = llama-server -np")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-size", type=int, default=1024, help="context per slot")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 4, 8],
        help="comma-separated closed-loop concurrencies (default 1,4,8)",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument(
        "--prompt-cache",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep the agent's idle KV caches (llama-server runs with cache_prompt off)",
    )
    parser.add_argument("--requests-per-worker", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat and keep each server's best round"
    )
    parser.add_argument("--servers", choices=["both", LLAMA_SERVER, AGENT], default="both")
    add_placement_arguments(parser)
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="llama-server build cache"
    )
    parser.add_argument(
        "--llama-server", type=Path, default=None, metavar="PATH",
        help="a llama-server binary to use instead of the one built into --cache-dir",
    )  # fmt: skip
    parser.add_argument("--build-jobs", type=int, default=2)
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument(
        "--side-by-side", type=int, default=0, metavar="N",
        help="run N copies of each server at once (as a fleet shares a host) and print "
        "per-request decode speed and CPU per token by thread (default 0: one at a time)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = default_model_path()
    if not args.model.is_file():
        parser.error(f"no model file at {args.model}")
    if min(*args.concurrency, args.requests_per_worker, args.tokens, args.rounds) < 1:
        parser.error("--concurrency, --requests-per-worker, --tokens and --rounds must be >= 1")
    if max(args.concurrency) > args.slots:
        parser.error("--concurrency above --slots: the agent rejects requests beyond its slots")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="paddler-bench-"))
    binary = None
    if args.servers in ("both", LLAMA_SERVER):
        binary = args.llama_server or ensure_llama_server(args.cache_dir, args.build_jobs)
    if args.side_by_side:
        kinds = [LLAMA_SERVER, AGENT] if args.servers == "both" else [args.servers]
        runs = {
            kind: asyncio.run(bench_side_by_side(kind, args, log_dir, binary)) for kind in kinds
        }
        print(side_by_side_table(args.concurrency, runs))
        print()
        print(
            f"Model `{args.model.name}`, {args.side_by_side} servers at once, {args.threads} "
            f"threads and {args.slots} slots each, {args.tokens} tokens per request, "
            f"{args.requests_per_worker} requests per worker, closed loop."
        )
        return
    baseline_rounds: list[dict[int, RunResult]] = []
    agent_rounds: list[dict[int, RunResult]] = []
    # Rounds alternate the servers, so a burst of outside load hurts one round, not one server.
    for round_number in range(1, args.rounds + 1):
        log(f"round {round_number} of {args.rounds}")
        if binary is not None:
            baseline_rounds.append(asyncio.run(bench_llama_server(binary, args, log_dir)))
        if args.servers in ("both", AGENT):
            agent_rounds.append(asyncio.run(bench_agent(args, log_dir)))
    baseline = best_of(baseline_rounds)
    agent = best_of(agent_rounds)
    print(markdown_table(args.concurrency, baseline, agent))
    print()
    print(notes(args, baseline, agent))


if __name__ == "__main__":
    main()
