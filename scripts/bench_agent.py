"""Benchmark the paddler agent against `llama-server` on the same GGUF, threads and slots.

Builds `llama-server` from the llama.cpp vendored in the llama-cpp-python sdist (cached), then
runs each server alone and drives it with the same closed-loop load at each concurrency: the same
prompts, the same number of generated tokens per request. Prints a markdown table with aggregate
tokens/s, time to first token p50/p99 and the ratio agent / llama-server.

Run: `.venv/bin/python scripts/bench_agent.py` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paddler.agent.default_model import default_model_path
from paddler.v1 import agent_pb2, generation_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_server_build import DEFAULT_CACHE_DIR, ensure_llama_server

HOST = "127.0.0.1"
LLAMA_SERVER = "llama-server"
AGENT = "agent"
GENERATE_METHOD = "/paddler.v1.AgentService/Generate"
TARGET_RATIO = 0.9
# Greedy with no repeat penalty: the same sampling work as llama-server's request below.
BENCH_SAMPLING = generation_pb2.SamplingParameters(temperature=0.0, repeat_penalty=1.0)
# Story openings: a model continues them at length, so the agent (which has no `ignore_eos`)
# rarely stops before `--tokens`.
PROMPTS = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the printing press begins in the fifteenth century, when",
    "Here is a detailed, step by step guide to baking bread at home. First,",
    "Chapter 1. The train left the station at midnight, and the only passenger",
    "The following essay explains why the sky is blue. Sunlight is made of",
    "Dear diary, today was the strangest day of my life. It started when",
)


@dataclass(frozen=True)
class Sample:
    """One completed request: seconds to the first text piece, tokens generated."""

    ttft: float
    tokens: int


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


RequestFn = Callable[[str], Awaitable[tuple[Sample, int]]]


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def started(name: str, command: list[str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group; always stop it (and its children) on exit."""
    log_path = log_dir / f"{name}.log"
    log(f"starting {name}: {' '.join(command)} (log: {log_path})")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
        log(f"stopped {name} (exit {process.returncode})")


async def wait_ready(
    process: subprocess.Popen[bytes], probe: Callable[[], Awaitable[bool]], limit_s: float
) -> None:
    """Poll `probe` until it says ready; fail if the process exits or `limit_s` passes."""
    async with asyncio.timeout(limit_s):
        while not await probe():
            if process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {process.returncode} before it was ready; see its log"
                )
            await asyncio.sleep(0.25)


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


def llama_server_stream(port: int, prompt: str, tokens: int, timeout: float) -> Sample:
    """One streaming `POST /completion` (blocking; runs in a worker thread)."""
    body = json.dumps(
        {
            "prompt": prompt,
            "n_predict": tokens,
            "stream": True,
            "ignore_eos": True,
            "cache_prompt": False,
            "temperature": BENCH_SAMPLING.temperature,
            "repeat_penalty": BENCH_SAMPLING.repeat_penalty,
        }
    )
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        start = time.perf_counter()
        connection.request("POST", "/completion", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"/completion: HTTP {response.status}: {response.read()[:200]!r}")
        ttft: float | None = None
        for line in response:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[len(b"data: ") :])
            if ttft is None and event.get("content"):
                ttft = time.perf_counter() - start
            if event.get("stop"):
                if ttft is None:
                    raise RuntimeError("/completion: no content before the end of the stream")
                return Sample(ttft, int(event["tokens_predicted"]))
        raise RuntimeError("/completion: stream ended without a final event")
    finally:
        connection.close()


def llama_server_ready(port: int) -> bool:
    """`GET /health` answers 200 once the model is loaded."""
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


async def bench_llama_server(
    binary: Path, args: argparse.Namespace, log_dir: Path
) -> dict[int, RunResult]:
    """Run `llama-server` with the agent's GGUF, threads and slots, and measure it."""
    port = free_port()
    command = [
        str(binary), "-m", str(args.model), "-t", str(args.threads), "-np", str(args.slots),
        "-c", str(args.slots * args.context_size), "--no-repack",
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    loop = asyncio.get_running_loop()
    # The server is stopped before the pool waits for its threads, so none is left hanging.
    with (
        ThreadPoolExecutor(max(args.concurrency) + 1) as pool,
        started(LLAMA_SERVER, command, log_dir) as process,
    ):

        async def probe() -> bool:
            return await loop.run_in_executor(pool, llama_server_ready, port)

        async def request(prompt: str) -> tuple[Sample, int]:
            sample = await loop.run_in_executor(
                pool, llama_server_stream, port, prompt, args.tokens, args.request_timeout
            )
            return sample, 0

        await wait_ready(process, probe, args.startup_timeout)
        return await measure(LLAMA_SERVER, request, args.concurrency, args.requests_per_worker)


async def bench_agent(args: argparse.Namespace, log_dir: Path) -> dict[int, RunResult]:
    """Run `python -m paddler agent` and measure it over gRPC."""
    port = free_port()
    command = [
        sys.executable, "-m", "paddler", "agent", "--model", str(args.model),
        "--slots", str(args.slots), "--threads", str(args.threads),
        "--context-size", str(args.context_size), "--host", HOST, "--port", str(port),
        "--balancer", "",
        "--prompt-cache" if args.prompt_cache else "--no-prompt-cache",
    ]  # fmt: skip
    with started(AGENT, command, log_dir) as process:
        async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # The channel's own multi-callable is typed; the generated stub class is not.
            agent_generate: grpc.aio.UnaryStreamMultiCallable[
                agent_pb2.GenerateRequest, agent_pb2.GenerateResponse
            ] = channel.unary_stream(
                GENERATE_METHOD,
                request_serializer=agent_pb2.GenerateRequest.SerializeToString,
                response_deserializer=agent_pb2.GenerateResponse.FromString,
            )

            async def probe() -> bool:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                except grpc.aio.AioRpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            async def request(prompt: str) -> tuple[Sample, int]:
                generate = agent_pb2.GenerateRequest(
                    input=generation_pb2.GenerationInput(
                        prompt=prompt,
                        max_tokens=args.tokens,
                        sampling=BENCH_SAMPLING,
                    )
                )
                start = time.perf_counter()
                # All slots busy answers RESOURCE_EXHAUSTED; a slot freed a moment late can
                # cause that at concurrency == slots, so retry (and count it).
                for retries in range(100):
                    ttft: float | None = None
                    try:
                        async for reply in agent_generate(generate, timeout=args.request_timeout):
                            if ttft is None and reply.text:
                                ttft = time.perf_counter() - start
                            if reply.HasField("summary"):
                                if ttft is None:
                                    raise RuntimeError("Generate: no text before the summary")
                                tokens = reply.summary.usage.completion_tokens
                                return Sample(ttft, tokens), retries
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or ttft is not None:
                            raise
                        await asyncio.sleep(0.01)
                        continue
                    raise RuntimeError("Generate: stream ended without a summary")
                raise RuntimeError("Generate: RESOURCE_EXHAUSTED 100 times in a row")

            await wait_ready(process, probe, args.startup_timeout)
            return await measure(AGENT, request, args.concurrency, args.requests_per_worker)


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
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="llama-server build cache"
    )
    parser.add_argument("--build-jobs", type=int, default=2)
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds")
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
        binary = ensure_llama_server(args.cache_dir, args.build_jobs)
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
