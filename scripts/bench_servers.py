"""The servers the benchmarks compare: llama-server and the paddler agent, started and driven alike.

Each `serving_*` block starts one server in its own process group, waits until it is ready,
yields a `Server` to send requests to, and always stops it (and its children) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paddler.v1 import agent_pb2, generation_pb2

HOST = "127.0.0.1"
LLAMA_SERVER = "llama-server"
AGENT = "agent"
GENERATE_METHOD = "/paddler.v1.AgentService/Generate"
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
    """One completed request: seconds to the first text piece and to the end, tokens generated."""

    ttft: float
    tokens: int
    seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        """The request's own decode speed: tokens after the first over the time they took."""
        return (self.tokens - 1) / max(self.seconds - self.ttft, 1e-9)


RequestFn = Callable[[str], Awaitable[tuple[Sample, int]]]


@dataclass(frozen=True)
class Server:
    """A running server under test: its name, process id, and how to send it one request."""

    name: str
    pid: int
    port: int
    request: RequestFn


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
                return Sample(ttft, int(event["tokens_predicted"]), time.perf_counter() - start)
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


def add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    """`--n-gpu-layers` and `--flash-attention`, given alike to both servers when set."""
    parser.add_argument(
        "--n-gpu-layers", default=None, metavar="auto|all|N",
        help="layers on the GPU: the agent's --n-gpu-layers, llama-server's -ngl (default unset)",
    )  # fmt: skip
    parser.add_argument(
        "--flash-attention", choices=["on", "off", "auto"], default=None,
        help="the agent's --flash-attention, llama-server's -fa (default unset: each its own)",
    )  # fmt: skip


@contextlib.asynccontextmanager
async def serving_llama_server(
    binary: Path, args: argparse.Namespace, log_dir: Path, name: str = LLAMA_SERVER
) -> AsyncIterator[Server]:
    """Run `llama-server` with the agent's GGUF, threads and slots until the block ends."""
    port = free_port()
    command = [
        str(binary), "-m", str(args.model), "-t", str(args.threads), "-np", str(args.slots),
        "-c", str(args.slots * args.context_size), "--no-repack",
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    if args.n_gpu_layers is not None:
        command += ["-ngl", args.n_gpu_layers]
    if args.flash_attention is not None:
        command += ["-fa", args.flash_attention]
    loop = asyncio.get_running_loop()
    # The server is stopped before the pool waits for its threads, so none is left hanging.
    with (
        ThreadPoolExecutor(max(args.concurrency) + 1) as pool,
        started(name, command, log_dir) as process,
    ):

        async def probe() -> bool:
            return await loop.run_in_executor(pool, llama_server_ready, port)

        async def request(prompt: str) -> tuple[Sample, int]:
            sample = await loop.run_in_executor(
                pool, llama_server_stream, port, prompt, args.tokens, args.request_timeout
            )
            return sample, 0

        await wait_ready(process, probe, args.startup_timeout)
        yield Server(name, process.pid, port, request)


@contextlib.asynccontextmanager
async def serving_agent(
    args: argparse.Namespace, log_dir: Path, name: str = AGENT
) -> AsyncIterator[Server]:
    """Run `python -m paddler agent` until the block ends; requests go over gRPC."""
    port = free_port()
    command = [
        sys.executable, "-m", "paddler", "agent", "--model", str(args.model),
        "--slots", str(args.slots), "--threads", str(args.threads),
        "--context-size", str(args.context_size), "--host", HOST, "--port", str(port),
        "--balancer", "",
        "--prompt-cache" if args.prompt_cache else "--no-prompt-cache",
    ]  # fmt: skip
    if args.n_gpu_layers is not None:
        command += ["--n-gpu-layers", args.n_gpu_layers]
    if args.flash_attention is not None:
        command += ["--flash-attention", args.flash_attention]
    with started(name, command, log_dir) as process:
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
                                seconds = time.perf_counter() - start
                                return Sample(ttft, tokens, seconds), retries
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or ttft is not None:
                            raise
                        await asyncio.sleep(0.01)
                        continue
                    raise RuntimeError("Generate: stream ended without a summary")
                raise RuntimeError("Generate: RESOURCE_EXHAUSTED 100 times in a row")

            await wait_ready(process, probe, args.startup_timeout)
            yield Server(name, process.pid, port, request)
