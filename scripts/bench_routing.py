"""Benchmark routing: the same seeded open-loop arrivals through our balancer and through the
proxies people use instead (nginx round robin and least_conn, haproxy leastconn with maxconn set
to each server's slots by hand) over llama-servers of the same models, threads and slots.

A fleet is a list of servers (model, slots), one llama.cpp thread each. For each fleet the
script first measures the capacity of our fleet (requests/s in a closed loop with one worker
per slot), then for each load (a share of that capacity) and seed it sends the same arrivals
(Poisson, or bursts of Poisson-distributed size) to every front and reports per front:
completed, rejected, errors, time to first token p50/p90/p99, end-to-end p99 and tokens/s.
Our fleet is loaded by gRPC (`paddler-slots`, `paddler-speed`) or, like the peers, by the same
blocking HTTP client through our OpenAI API's `/v1/completions` (`paddler-slots-http`,
`paddler-speed-http`). With `--disturb`, a client that bypasses the front keeps the first
server busy (one request after another) for the middle third of the arrivals: a server that
gets slower mid-run.

Every run is appended to `--results` (JSON lines) and a run already there is skipped, so a grid
longer than one sitting is measured piece by piece; `--report` prints the tables, with the
issue's targets checked, from that file alone. Runs in one file compare only while the machine
stays as it was: on this shared machine one front and seed gave a TTFT p99 8x apart in two
sittings of one day. So start a new file for each sitting (its capacity is measured at its
start) and, to add to an old file, rerun one of its runs first as a control.

Run: `.venv/bin/python scripts/bench_routing.py` (see `--help`). Needs nginx and haproxy
(`apt-get install nginx haproxy`) and builds llama-server once (`llama_server_build.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_servers import llama_server_ready, log
from llama_server_build import ensure_llama_server
from routing_fronts import (
    CONTEXT_PER_SLOT,
    PEERS,
    PaddlerFleet,
    agent_request,
    grpc_request,
    http_request,
    llama_servers,
    openai_request,
    paddler_fleet,
    proxy,
)
from routing_results import Outcome, Report, ResultStore, RunKey, report
from thread_cpu import group_cpu_s

# Our balancer under each --routing policy, then the peers.
# Our fronts: the routing policy, and whether the load comes by gRPC or, like the peers' load,
# by HTTP (our OpenAI API's streaming /v1/completions, the same blocking client in threads).
OURS = {
    "paddler-slots": ("slots", "grpc"),
    "paddler-speed": ("speed", "grpc"),
    "paddler-slots-http": ("slots", "http"),
    "paddler-speed-http": ("speed", "http"),
}
FRONTS = (*OURS, *PEERS)
# Fleets of servers (packaged model, slots) that differ in speed, not only in slots.
FLEETS: dict[str, tuple[tuple[str, int], ...]] = {
    "slots-1-3": (("smollm2-135m", 1), ("smollm2-135m", 3)),
    "models-2-2": (("smollm2-135m", 2), ("gemma3-270m", 2)),
}
PATTERNS = ("poisson", "bursty")
DISTURB_RETRY_S = 0.05
DEFAULT_RESULTS = Path("docs/data/routing-runs.jsonl")


def arrivals(pattern: str, rate: float, count: int, seed: int) -> list[float]:
    """Seeded arrival times (seconds from the start) at ``rate`` requests/s on average."""
    draw = random.Random(seed)
    times: list[float] = []
    now = 0.0
    while len(times) < count:
        if pattern == "poisson":
            now += draw.expovariate(rate)
            times.append(now)
            continue
        burst = 1 + min(int(draw.expovariate(1 / 3)), 9)  # mean about 3.5 requests at once
        now += draw.expovariate(rate / burst)
        times.extend([now] * burst)
    return times[:count]


Send = Callable[[int], Awaitable[Outcome]]


async def open_loop(send: Send, times: Sequence[float], disturb: Send | None = None) -> Report:
    """Send request i at ``times[i]`` whatever the earlier ones are doing; with ``disturb``,
    one request after another goes there from the third to the two-thirds arrival."""
    start = time.perf_counter()

    async def one(index: int, at: float) -> Outcome:
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        return await send(index)

    async def disturber(begin: float, end: float) -> int:
        await asyncio.sleep(max(0.0, start + begin - time.perf_counter()))
        served = 0
        while time.perf_counter() < start + end:
            assert disturb is not None
            if (await disturb(10**7 + served)).status == "ok":
                served += 1
            else:  # an agent refuses when its slots are full (llama-server queues): try again
                await asyncio.sleep(DISTURB_RETRY_S)
        return served

    third = len(times) // 3
    disturbing = asyncio.create_task(disturber(times[third], times[2 * third])) if disturb else None
    outcomes = await asyncio.gather(*(one(i, at) for i, at in enumerate(times)))
    if disturbing is not None:
        log(f"the disturbing client was served {await disturbing} requests")
    return Report(tuple(outcomes), time.perf_counter() - start)


async def closed_loop_rate(send: Send, workers: int, per_worker: int) -> float:
    """Completed requests per second with ``workers`` back-to-back clients (the capacity)."""
    numbers = iter(range(10**6, 2 * 10**6))

    async def worker() -> int:
        done = 0
        for _ in range(per_worker):
            done += (await send(next(numbers))).status == "ok"
        return done

    start = time.perf_counter()
    done = sum(await asyncio.gather(*(worker() for _ in range(workers))))
    return done / (time.perf_counter() - start)


class Grid:
    """The runs still to do on one fleet, and where their results go."""

    def __init__(self, fleet: str, args: argparse.Namespace, store: ResultStore) -> None:
        self.fleet = fleet
        self.args = args
        self.store = store

    def keys(self, front: str) -> list[RunKey]:
        """Every run this invocation asks of ``front``."""
        args = self.args
        return [
            RunKey(self.fleet, args.pattern, args.disturb, load, seed, front)
            for load in args.loads
            for seed in args.seeds
        ]

    def missing(self, front: str) -> list[RunKey]:
        """The runs of ``front`` not in the results file yet."""
        return [key for key in self.keys(front) if key not in self.store.runs]

    @property
    def capacity(self) -> float | None:
        """The fleet's capacity: the flag's, else the one in the results file."""
        return self.args.capacity or self.store.capacities.get((self.fleet, self.args.tokens))

    async def run(self, front: str, send: Send, disturb: Send, pids: Sequence[int]) -> None:
        """Measure the missing runs of ``front``, whose processes (groups) are ``pids``."""
        capacity = self.capacity
        assert capacity is not None
        for key in self.missing(front):
            times = arrivals(key.pattern, key.load * capacity, self.args.requests, key.seed)
            servers_before, client_before = _cpu(pids)
            result = await open_loop(send, times, disturb if key.disturbed else None)
            servers_after, client_after = _cpu(pids)
            result = replace(
                result,
                servers_cpu_s=servers_after - servers_before,
                client_cpu_s=client_after - client_before,
            )
            self.store.add_run(key, result)
            log(
                f"{key.fleet} {key.pattern}{' disturbed' if key.disturbed else ''} load "
                f"{key.load:.0%} seed {key.seed} {front}: ok {result.count('ok')}, "
                f"TTFT p99 {result.quantile_ms('ttft', 0.99):.0f} ms"
            )


def _cpu(pids: Sequence[int]) -> tuple[float, float]:
    """CPU seconds so far of the front's processes (with their children), and of this client."""
    return sum(group_cpu_s(pid) for pid in pids), time.process_time()


def our_sender(
    ours: PaddlerFleet, client: str, args: argparse.Namespace, pool: ThreadPoolExecutor
) -> Send:
    """How the load reaches our balancer: by gRPC, or by HTTP with the peers' client."""
    if client == "http":
        loop = asyncio.get_running_loop()

        async def over_http(index: int) -> Outcome:
            return await loop.run_in_executor(
                pool, openai_request, ours.openai_port, index, args.tokens, args.request_timeout
            )

        return over_http

    async def over_grpc(index: int) -> Outcome:
        return await grpc_request(ours.inference, index, args.tokens, args.request_timeout)

    return over_grpc


async def bench_fleet(
    name: str, args: argparse.Namespace, log_dir: Path, grid: Grid, pool: ThreadPoolExecutor
) -> None:
    """Every missing run of every front on one fleet (the capacity first, when unknown);
    ``pool`` runs the blocking HTTP clients."""
    fleet = FLEETS[name]
    slots = [count for _, count in fleet]
    loop = asyncio.get_running_loop()
    for front, (routing, client) in OURS.items():
        wanted = front in args.fronts and grid.missing(front)
        if not wanted and grid.capacity:
            continue
        async with paddler_fleet(fleet, routing, args, log_dir / f"{name}-{front}") as ours:
            send = our_sender(ours, client, args, pool)

            async def disturb(index: int) -> Outcome:
                return await agent_request(
                    ours.first_agent, index, args.tokens, args.request_timeout
                )

            if not grid.capacity:
                capacity = await closed_loop_rate(send, sum(slots), args.capacity_requests)
                grid.store.add_capacity(name, args.tokens, capacity)
                log(f"{name}: capacity {capacity:.2f} requests/s ({args.tokens} tokens each)")
            if wanted:
                await grid.run(front, send, disturb, ours.pids)
    peers = [front for front in PEERS if front in args.fronts and grid.missing(front)]
    if not peers:
        return
    binary = ensure_llama_server()
    with llama_servers(fleet, binary, log_dir / f"{name}-llama") as (ports, server_pids):
        deadline = time.monotonic() + 180
        while not all(llama_server_ready(port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("llama-servers did not become healthy")
            await asyncio.sleep(0.5)

        async def direct(index: int) -> Outcome:
            return await loop.run_in_executor(
                pool, http_request, ports[0], index, args.tokens, args.request_timeout
            )

        for front in peers:
            with proxy(front, ports, slots, log_dir) as (listen, proxy_pid):

                async def theirs(index: int, port: int = listen) -> Outcome:
                    return await loop.run_in_executor(
                        pool, http_request, port, index, args.tokens, args.request_timeout
                    )

                await grid.run(front, theirs, direct, [*server_pids, proxy_pid])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleets", nargs="+", choices=sorted(FLEETS), default=sorted(FLEETS))
    parser.add_argument("--fronts", nargs="+", choices=FRONTS, default=list(FRONTS))
    parser.add_argument("--pattern", choices=PATTERNS, default="poisson")
    parser.add_argument(
        "--disturb", action="store_true",
        help="a direct client keeps the first server busy for the middle third of each run",
    )  # fmt: skip
    parser.add_argument(
        "--loads", type=float, nargs="+", default=[0.5, 0.75, 0.9], help="shares of capacity"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--requests", type=int, default=200, help="requests per run")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument(
        "--capacity-requests", type=int, default=6, help="requests per worker when measuring"
    )
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS,
        help=f"JSON lines of every run; runs already there are skipped (default {DEFAULT_RESULTS})",
    )  # fmt: skip
    parser.add_argument(
        "--report", action="store_true", help="print the tables from --results; run nothing"
    )
    parser.add_argument(
        "--capacity", type=float, help="requests/s of the fleet (default: measured, then kept)"
    )
    args = parser.parse_args(argv)
    if args.capacity is not None and len(args.fleets) != 1:
        parser.error("--capacity is one fleet's: give exactly one --fleets")
    if args.requests < 1 or args.tokens < 1 or not all(load > 0 for load in args.loads):
        parser.error("--requests, --tokens and every --loads value must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run what is missing, then print the tables of every run in the results file."""
    args = parse_args(argv)
    store = ResultStore(args.results)
    if not args.report:
        log_dir = Path(tempfile.mkdtemp(prefix="bench-routing-"))
        log(f"logs in {log_dir}; results in {args.results}")
        with ThreadPoolExecutor(max_workers=args.requests + 1) as pool:
            for name in args.fleets:
                asyncio.run(bench_fleet(name, args, log_dir, Grid(name, args, store), pool))
    print(report(store.runs))
    print(
        f"\n{args.requests} requests per run, {args.tokens} tokens each, greedy, one llama.cpp "
        f"thread per server and {CONTEXT_PER_SLOT} tokens of context per slot, no prompt cache "
        "on either side."
    )


if __name__ == "__main__":
    main()
