"""Benchmark the balancer at scale against simulated agents (a fake engine: no model runs).

Three parts:

1. Routing decisions/s on one core, in process: a real ``SlotDispatcher`` and ``AgentRegistry``
   with N agents whose statuses and running streams are drawn (seeded), each decision one
   ``acquire`` (the policy plans) and one ``release``, for ``--routing slots`` and ``speed``;
   then again with every agent reporting a full snapshot of prefix links and each request the
   next turn of a conversation one of them holds.
2. A real balancer process with ``paddler simulated-fleet`` (N agents of uneven speed): its CPU
   and memory while the fleet only sends status snapshots (each agent one a second), then under
   seeded Poisson arrivals, per policy: completed, TTFT p50/p99, end-to-end p99.
3. The relay ceiling: simulated agents that send tokens as fast as they can, many streams at
   once, through the balancer and straight to the agents, tokens/s at the client and the CPU
   each process used: the busiest process is what bounds it.

Run: `.venv/bin/python scripts/bench_fleet_sim.py` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.routing_policy import RoutingName
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.state_store import StateStore
from paddler.balancer.stream_claim import Demand, StreamClaim
from paddler.common.logging import configure_logging
from paddler.common.prefix_chain import (
    LINKS_PER_PROMPT,
    MAX_PREFIX_HASHES,
    prefix_chain,
    reported_links,
)
from paddler.processes.balancer import routing_policy
from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    generation_pb2,
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
    status_pb2,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_servers import HOST, log, started
from routing_fronts import first_record

POLICIES: tuple[RoutingName, ...] = ("slots", "speed", "round-robin")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


# ---- 1: decisions per second --------------------------------------------------------------


def _conversation(user: int, turns: int) -> generation_pb2.GenerationInput:
    """User ``user``'s conversation after ``turns`` turns, under a system prompt all share."""
    messages = [generation_pb2.ChatMessage(role="system", content="You are helpful. " * 50)]
    messages.extend(
        generation_pb2.ChatMessage(
            role="user" if turn % 2 == 0 else "assistant", content=f"user {user}, turn {turn}"
        )
        for turn in range(turns)
    )
    conversation = generation_pb2.Conversation(messages=messages)
    return generation_pb2.GenerationInput(conversation=conversation, max_tokens=64)


async def decisions_per_second(
    agents: int, policy: RoutingName, seconds: float, prefixes: bool = False
) -> float:
    """Acquire-and-release cycles per second through a real dispatcher over ``agents``.

    With ``prefixes`` every agent reports as many prefix links as a snapshot carries (16
    conversations of 12 turns each) and each request is the next turn of one of them."""
    chooser = random.Random(agents)
    registry = AgentRegistry(max_agents=max(agents, 1))
    users_per_agent = MAX_PREFIX_HASHES // LINKS_PER_PROMPT
    for number in range(agents):
        agent = await registry.add(f"sim-{number}", f"{HOST}:{10000 + number}")
        slots = 4
        factor = chooser.uniform(1, 3)
        status = status_pb2.AgentStatus(slots_total=slots, ready=True)
        for streams in range(1, slots + 1):
            status.step_timings.add(streams=streams, step_seconds=0.02 * factor * streams)
        status.prefill_seconds_per_token = 0.001 * factor
        if prefixes:
            for user in range(number * users_per_agent, (number + 1) * users_per_agent):
                chain = prefix_chain(_conversation(user, 12))
                status.prefix_hashes.extend(reported_links(chain))
        registry.update(agent, status)
        for _ in range(chooser.randint(0, slots - 1)):  # leave a slot free everywhere
            agent.streams.add(StreamClaim(agent, Demand(20, 64), relayed=chooser.randint(0, 63)))
    dispatcher = SlotDispatcher(
        registry, StateStore(None), 100, 30, routing_policy(policy, registry.prefixes)
    )
    users = range(agents * users_per_agent)
    demands = [
        Demand.of(_conversation(chooser.choice(users), 14)) if prefixes else Demand(20, 64)
        for _ in range(100)
    ]
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for demand in demands:
            dispatcher.release(await dispatcher.acquire(None, demand=demand))
        done += len(demands)
    for agent in registry.agents():
        await registry.remove(agent, "benchmark over", abandon=True)
    return done / elapsed


# ---- processes -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of a process."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES / 2**20


@contextlib.asynccontextmanager
async def sim_cluster(
    routing: RoutingName, agents: int, fleet_args: Sequence[str], log_dir: Path
) -> AsyncIterator[tuple[str, str, int, int]]:
    """A balancer and a simulated fleet, all registered: (inference, management, balancer
    pid, fleet pid)."""
    paddler = [sys.executable, "-m", "paddler"]
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        balancer = stack.enter_context(
            started(
                "balancer",
                [
                    *paddler, "balancer", "--inference-addr", f"{HOST}:0", "--openai-addr", "",
                    "--web-addr", "",
                    "--management-addr", f"{HOST}:0", "--max-buffered-requests", "100000",
                    "--buffered-request-timeout", "600", "--routing", routing,
                ],
                log_dir,
            )
        )  # fmt: skip
        listening = await first_record(log_dir / "balancer.log", "balancer listening")
        fleet = stack.enter_context(
            started(
                "fleet",
                [
                    *paddler, "simulated-fleet", "--balancer", str(listening["management"]),
                    "--agents", str(agents), *fleet_args,
                ],
                log_dir,
            )
        )  # fmt: skip
        await first_record(log_dir / "fleet.log", "simulated fleet listening", limit_s=600)
        management = str(listening["management"])
        async with grpc.aio.insecure_channel(management) as channel:
            stub = management_pb2_grpc.ManagementServiceStub(channel)
            deadline = time.monotonic() + 600
            while True:
                reply = await stub.ListAgents(management_pb2.ListAgentsRequest())
                if sum(1 for a in reply.agents if a.ready) == agents:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(reply.agents)} of {agents} agents registered")
                await asyncio.sleep(0.5)
        yield str(listening["inference"]), management, balancer.pid, fleet.pid


# ---- 2: load ------------------------------------------------------------------------------


def request(tokens: int) -> inference_pb2.InferenceServiceGenerateRequest:
    """A prompt of 20 words, ``tokens`` tokens."""
    generation = generation_pb2.GenerationInput(prompt=" ".join(["word"] * 20), max_tokens=tokens)
    return inference_pb2.InferenceServiceGenerateRequest(input=generation)


async def one(
    stub: inference_pb2_grpc.InferenceServiceAsyncStub, tokens: int, arrival: float
) -> tuple[float, float] | None:
    """(TTFT, end-to-end) in seconds from the arrival, or None if it failed."""
    first = math.nan
    try:
        async for response in stub.Generate(request(tokens), timeout=600):
            if math.isnan(first):
                first = time.perf_counter() - arrival
            if response.HasField("summary"):
                return first, time.perf_counter() - arrival
    except grpc.RpcError:
        return None
    return None


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


async def load_run(
    inference: str, rate: float, count: int, tokens: int, seed: int
) -> tuple[int, list[float], list[float]]:
    """Seeded Poisson arrivals: (failed, TTFTs, end-to-end times)."""
    chooser = random.Random(seed)
    async with grpc.aio.insecure_channel(inference) as channel:
        stub: inference_pb2_grpc.InferenceServiceAsyncStub = (
            inference_pb2_grpc.InferenceServiceStub(channel)
        )
        start = time.perf_counter()
        at = 0.0
        tasks = []
        for _ in range(count):
            at += chooser.expovariate(rate)
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(stub, tokens, start + at)))
        results = await asyncio.gather(*tasks)
    ok = [r for r in results if r is not None]
    return count - len(ok), [r[0] for r in ok], [r[1] for r in ok]


async def fleet_run(args: argparse.Namespace, log_dir: Path) -> list[str]:
    """Idle snapshot cost and the policies under load, one row each."""
    rows = []
    fleet_args = ["--slots", "4", "--max-factor", str(args.max_factor), "--token-time", "0.02"]
    for policy in POLICIES:
        async with sim_cluster(policy, args.agents, fleet_args, log_dir / policy) as (
            inference, _, balancer, _,
        ):  # fmt: skip
            before = cpu_seconds(balancer)
            await asyncio.sleep(args.idle_seconds)
            idle_cpu = (cpu_seconds(balancer) - before) / args.idle_seconds
            before_cpu, began = cpu_seconds(balancer), time.perf_counter()
            failed, ttfts, totals = await load_run(
                inference, args.rate, args.requests, args.tokens, args.seed
            )
            busy_cpu = (cpu_seconds(balancer) - before_cpu) / (time.perf_counter() - began)
            rows.append(
                f"| {policy} | {args.agents} | {args.agents} | {idle_cpu:.0%} | "
                f"{args.rate:g} | {len(ttfts)} | {failed} | {1000 * quantile(ttfts, 0.5):.0f} | "
                f"{1000 * quantile(ttfts, 0.99):.0f} | {1000 * quantile(totals, 0.99):.0f} | "
                f"{busy_cpu:.0%} | {rss_mib(balancer):.0f} |"
            )
            log(rows[-1])
    return rows


# ---- 3: relay ceiling --------------------------------------------------------------------


async def stream_tokens(stub: Any, message: Any, count: int) -> int:
    """Run ``count`` streams of ``message`` at once on ``stub``; return the pieces received."""

    return sum(await asyncio.gather(*(pieces_of(stub, message) for _ in range(count))))


async def pieces_of(stub: Any, message: Any) -> int:
    """One ``Generate`` call of ``message`` on ``stub``, read to the end: its pieces."""
    pieces = 0
    async for response in stub.Generate(message, timeout=600):
        pieces += not response.HasField("summary")
    return pieces


async def agent_addresses(management: str) -> list[str]:
    """The gRPC addresses of the agents the balancer at ``management`` lists."""
    async with grpc.aio.insecure_channel(management) as channel:
        listed = await management_pb2_grpc.ManagementServiceStub(channel).ListAgents(
            management_pb2.ListAgentsRequest()
        )
    return [agent.address for agent in listed.agents]


async def ceiling(args: argparse.Namespace, log_dir: Path) -> list[str]:
    """Tokens/s through the balancer and straight to the agents, with each process's CPU."""
    agents, streams = args.ceiling_agents, args.ceiling_streams
    fleet_args = ["--slots", str(math.ceil(streams / agents)), "--token-time", "0", "--growth", "0"]
    rows = []
    async with sim_cluster("slots", agents, fleet_args, log_dir / "ceiling") as (
        inference, management, balancer, fleet,
    ):  # fmt: skip
        addresses = await agent_addresses(management)
        generation = request(args.ceiling_tokens).input
        processes = (("balancer", balancer), ("fleet", fleet), ("client", os.getpid()))
        for path in ("direct", "balancer"):
            cpu = {name: cpu_seconds(pid) for name, pid in processes}
            began = time.perf_counter()
            if path == "balancer":
                async with grpc.aio.insecure_channel(inference) as channel:
                    stub = inference_pb2_grpc.InferenceServiceStub(channel)
                    pieces = await stream_tokens(
                        stub, inference_pb2.InferenceServiceGenerateRequest(input=generation),
                        streams,
                    )  # fmt: skip
            else:
                per_agent = math.ceil(streams / agents)
                channels = [grpc.aio.insecure_channel(address) for address in addresses]
                counts = await asyncio.gather(
                    *(
                        stream_tokens(
                            agent_pb2_grpc.AgentServiceStub(ch),
                            agent_pb2.GenerateRequest(input=generation),
                            per_agent,
                        )
                        for ch in channels
                    )
                )
                pieces = sum(counts)
                for ch in channels:
                    await ch.close()
            wall = time.perf_counter() - began
            used = {name: (cpu_seconds(pid) - cpu[name]) / wall for name, pid in processes}
            rows.append(
                f"| {path} | {streams} | {pieces / wall:,.0f} | {used['balancer']:.0%} | "
                f"{used['fleet']:.0%} | {used['client']:.0%} |"
            )
            log(rows[-1])
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decision-agents", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--decision-seconds", type=float, default=3.0)
    parser.add_argument("--agents", type=int, default=100, help="simulated agents under load")
    parser.add_argument("--max-factor", type=float, default=3.0, help="slowest agent's factor")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s under load")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ceiling-agents", type=int, default=8)
    parser.add_argument("--ceiling-streams", type=int, default=64)
    parser.add_argument("--ceiling-tokens", type=int, default=2000)
    parser.add_argument(
        "--parts", nargs="+", choices=("decisions", "fleet", "ceiling"),
        default=["decisions", "fleet", "ceiling"],
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the parts asked for and print their markdown tables."""
    args = parse_args(argv)
    configure_logging("error")  # the in-process registry's lines would drown the tables
    log_dir = Path(tempfile.mkdtemp(prefix="bench-fleet-sim-"))
    log(f"logs in {log_dir}")
    if "decisions" in args.parts:
        print("| policy | agents | decisions/s (one core) | with prefixes |\n|---|---|---|---|")
        for agents in args.decision_agents:
            for policy in POLICIES:
                rates = [
                    asyncio.run(decisions_per_second(agents, policy, args.decision_seconds, held))
                    for held in (False, True)
                ]
                print(f"| {policy} | {agents} | {rates[0]:,.0f} | {rates[1]:,.0f} |", flush=True)
    if "fleet" in args.parts:
        print(
            "\n| policy | agents | snapshots/s idle | balancer CPU idle | requests/s | completed "
            "| failed | TTFT p50 ms | TTFT p99 ms | end-to-end p99 ms | balancer CPU loaded "
            "| balancer RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        )
        print("\n".join(asyncio.run(fleet_run(args, log_dir))), flush=True)
    if "ceiling" in args.parts:
        print(
            "\n| path | streams | tokens/s | balancer CPU | fleet CPU | client CPU |\n"
            "|---|---|---|---|---|---|"
        )
        print("\n".join(asyncio.run(ceiling(args, log_dir))), flush=True)


if __name__ == "__main__":
    main()
