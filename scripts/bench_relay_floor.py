"""How close the balancer's relay is to gRPC's own floor: the same streams from simulated agents
through our balancer and through a bare relay (a gRPC asyncio server on uvloop whose only work
is to forward each agent message's bytes, ``async for chunk in call: yield chunk``), one after
the other in one run. Per path: tokens/s at the client, and the relaying process's CPU and
wake-ups per token (from /proc, per thread name).

What it separates: the CPU a relayed token costs in gRPC's Python stack whatever we do (the
bare relay) from what our balancer adds (dispatch, metrics, failover bookkeeping).

Run: `.venv/bin/python scripts/bench_relay_floor.py` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fleet_sim import agent_addresses, pieces_of, request, sim_cluster
from bench_servers import HOST, started
from routing_fronts import first_record
from thread_cpu import read_threads, use_by_name

from paddler.common.logging import configure_logging
from paddler.v1 import inference_pb2_grpc

GENERATE = "/paddler.v1.AgentService/Generate"
RELAY_SERVICE = "paddler.v1.InferenceService"


# ---- the bare relay (its own process) -----------------------------------------------------


async def serve_relay(agents: Sequence[str]) -> None:
    """Relay ``InferenceService.Generate`` to the agents in turn, bytes as they come."""
    channels = [grpc.aio.insecure_channel(address) for address in agents]
    calls: list[grpc.aio.UnaryStreamMultiCallable[bytes, bytes]] = [
        channel.unary_stream(GENERATE)
        for channel in channels  # bytes in, bytes out
    ]
    turn = itertools.cycle(calls)

    async def generate(request: bytes, context: Any) -> AsyncIterator[bytes]:
        # An InferenceService request's input is field 2 as in an agent's GenerateRequest.
        async for chunk in next(turn)(request):
            yield chunk

    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_stream_rpc_method_handler(generate)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(RELAY_SERVICE, {"Generate": handler}),)
    )
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(json.dumps({"event": "relay listening", "address": f"{HOST}:{port}"}), flush=True)
    await server.wait_for_termination()


# ---- the load -----------------------------------------------------------------------------


async def closed_loop(address: str, streams: int, per_stream: int, tokens: int) -> int:
    """``streams`` clients, each ``per_stream`` requests in a row; returns the tokens."""
    message = request(tokens)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def client() -> int:
            return sum([await pieces_of(stub, message) for _ in range(per_stream)])

        return sum(await asyncio.gather(*(client() for _ in range(streams))))


async def measure(name: str, address: str, pid: int, args: argparse.Namespace) -> str:
    """One warm-up request per stream, then the measured loop: a table row."""
    await closed_loop(address, args.streams, 1, args.tokens)
    before = read_threads(pid)
    began = time.perf_counter()
    tokens = await closed_loop(address, args.streams, args.requests_per_stream, args.tokens)
    wall = time.perf_counter() - began
    uses = use_by_name(before, read_threads(pid))
    cpu_ms = sum(use.cpu_s for use in uses.values()) * 1000 / tokens
    wakeups = sum(use.wakeups for use in uses.values()) / tokens
    threads = ", ".join(
        f"{thread} {use.cpu_s * 1000 / tokens:.3f} ms ({use.wakeups / tokens:.1f} wake-ups)"
        for thread, use in sorted(uses.items(), key=lambda item: -item[1].cpu_s)
        if use.cpu_s * 1000 / tokens >= 0.001
    )
    return (
        f"| {name} | {args.streams} | {tokens / wall:,.0f} | {cpu_ms:.3f} | {wakeups:.1f} "
        f"| {threads} |"
    )


async def run(args: argparse.Namespace) -> list[str]:
    """Both paths over one simulated fleet."""
    per_agent = math.ceil(args.streams / args.agents)
    fleet_args = [
        "--slots", str(per_agent), "--token-time", str(args.token_time), "--growth", "0",
        "--max-factor", "1",
    ]  # fmt: skip
    log_dir = args.log_dir
    async with sim_cluster("slots", args.agents, fleet_args, log_dir) as (
        inference, management, balancer, _fleet,
    ):  # fmt: skip
        agents = await agent_addresses(management)
        relay_command = [sys.executable, __file__, "--serve-relay", *agents]
        with started("bare-relay", relay_command, log_dir) as relay:
            listening = await first_record(log_dir / "bare-relay.log", "relay listening")
            relay_address = str(listening["address"])
            rows = [await measure("paddler balancer", inference, balancer, args)]
            rows.append(await measure("bare gRPC relay", relay_address, relay.pid, args))
            rows.append(await measure("paddler balancer", inference, balancer, args))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams")
    parser.add_argument("--agents", type=int, default=2, help="simulated agents")
    parser.add_argument(
        "--token-time", type=float, default=0.02, help="seconds per token per stream (0: flat out)"
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--requests-per-stream", type=int, default=10)
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/bench-relay-floor"))
    parser.add_argument("--serve-relay", nargs="+", metavar="AGENT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison, or (``--serve-relay``) be the bare relay."""
    args = parse_args(argv)
    if args.serve_relay:
        uvloop.run(serve_relay(args.serve_relay))
        return
    configure_logging()
    rows = asyncio.run(run(args))
    print(
        f"\n{args.token_time:g} s per token, {args.tokens} tokens per request\n\n"
        "| path | streams | tokens/s | CPU ms/token | wake-ups/token | by thread |\n"
        "|---|---|---|---|---|---|"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
