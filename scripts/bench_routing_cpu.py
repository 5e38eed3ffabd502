"""Where each front's CPU goes per generated token: our balancer and agents against haproxy and
llama-servers of the same fleet, each under the same closed loop (one worker per slot, so every
slot stays busy), read per process and per thread name from /proc.

Run: `.venv/bin/python scripts/bench_routing_cpu.py --fleet models-2-2 --requests-per-worker 8`.
Prints, per front, tokens/s and the CPU milliseconds per generated token of every process (and of
its busiest threads, with their wake-ups and preemptions), then the ratio of the two totals.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_routing import FLEETS
from bench_servers import llama_server_ready
from llama_server_build import ensure_llama_server
from routing_fronts import grpc_request, http_request, llama_servers, paddler_fleet, proxy
from routing_results import HAPROXY, Outcome
from thread_cpu import ThreadReading, read_threads, use_by_name

Send = Callable[[int], Awaitable[Outcome]]
# Threads using less than this share of a process's CPU are left out of the printout.
MINOR_SHARE = 0.02
FRONTS = ("paddler-slots", HAPROXY)
LIMIT_S = 600.0
Fleet = Sequence[tuple[str, int]]


async def closed_loop(send: Send, workers: int, per_worker: int, first: int) -> tuple[int, float]:
    """Tokens generated and seconds taken by ``workers`` back-to-back clients."""
    numbers = iter(range(first, first + workers * per_worker))
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        for _ in range(per_worker):
            outcome = await send(next(numbers))
            tokens += outcome.tokens if outcome.status == "ok" else 0

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return tokens, time.perf_counter() - start


async def measure(
    front: str, send: Send, pids: dict[str, int], workers: int, per_worker: int
) -> float:
    """One warm-up round, then the measured loop; prints the breakdown, returns ms/token."""
    await closed_loop(send, workers, 1, first=900_000)
    before: dict[str, dict[int, ThreadReading]] = {n: read_threads(p) for n, p in pids.items()}
    client_before = time.process_time()
    tokens, seconds = await closed_loop(send, workers, per_worker, first=1_000_000)
    client_ms = (time.process_time() - client_before) * 1000 / tokens
    total_ms = 0.0
    print(f"{front}: {tokens} tokens, {tokens / seconds:.1f} tok/s, client {client_ms:.2f} ms/tok")
    for name, pid in pids.items():
        uses = use_by_name(before[name], read_threads(pid))
        cpu_s = sum(use.cpu_s for use in uses.values())
        total_ms += cpu_s * 1000 / tokens
        threads = ", ".join(
            f"{thread} {use.cpu_s * 1000 / tokens:.2f} (wake-ups {use.wakeups}, "
            f"preempted {use.preemptions})"
            for thread, use in uses.items()
            if use.cpu_s >= MINOR_SHARE * cpu_s
        )
        print(f"  {name}: {cpu_s * 1000 / tokens:.2f} ms/token: {threads}")
    print(f"  {front} in all: {total_ms:.2f} ms of CPU per token")
    return total_ms


async def measure_ours(fleet: Fleet, args: argparse.Namespace) -> float:
    """Our balancer and one agent per server, under the slot policy."""
    workers = sum(count for _, count in fleet)
    fleet_args = argparse.Namespace(request_timeout=LIMIT_S)
    async with paddler_fleet(fleet, "slots", fleet_args, args.log_dir / "paddler") as ours:

        async def send(index: int) -> Outcome:
            return await grpc_request(ours.inference, index, args.tokens, LIMIT_S)

        names = ["balancer", *(f"agent {model} x{count}" for model, count in fleet)]
        processes = dict(zip(names, ours.pids, strict=True))
        return await measure("paddler-slots", send, processes, workers, args.requests_per_worker)


async def measure_theirs(fleet: Fleet, args: argparse.Namespace) -> float:
    """haproxy leastconn (maxconn = slots) over one llama-server per server."""
    slots = [count for _, count in fleet]
    workers = sum(slots)
    loop = asyncio.get_running_loop()
    with (
        ThreadPoolExecutor(max_workers=workers + 1) as pool,
        llama_servers(fleet, ensure_llama_server(), args.log_dir / "llama") as (ports, pids),
    ):
        deadline = time.monotonic() + 180
        while not all(llama_server_ready(port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("llama-servers did not become healthy")
            await asyncio.sleep(0.5)
        with proxy(HAPROXY, ports, slots, args.log_dir) as (listen, proxy_pid):

            async def send(index: int) -> Outcome:
                return await loop.run_in_executor(
                    pool, http_request, listen, index, args.tokens, LIMIT_S
                )

            names = [f"llama-server {model} x{count}" for model, count in fleet]
            processes = {**dict(zip(names, pids, strict=True)), "haproxy": proxy_pid}
            return await measure(HAPROXY, send, processes, workers, args.requests_per_worker)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", choices=sorted(FLEETS), default="models-2-2")
    parser.add_argument("--fronts", nargs="+", choices=FRONTS, default=list(FRONTS))
    parser.add_argument("--requests-per-worker", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/bench-routing-cpu"))
    args = parser.parse_args(argv)
    fleet = FLEETS[args.fleet]
    totals = {}
    if "paddler-slots" in args.fronts:
        totals["ours"] = await measure_ours(fleet, args)
    if HAPROXY in args.fronts:
        totals["theirs"] = await measure_theirs(fleet, args)
    if len(totals) == 2:
        print(f"CPU per token, ours / theirs: {totals['ours'] / totals['theirs']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
