"""The fronts `bench_routing.py` compares, and how to reach them: our balancer with one agent
per server, and nginx or haproxy over one llama-server per server (same models, threads, slots).
Each server can also be reached directly, as a client that bypasses the front would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from paddler.agent.default_model import default_model_path
from paddler.agent.model_source import resolve_model
from paddler.agent.state_report import StateReport
from paddler.common.addresses import split_host_port
from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    desired_state_pb2,
    generation_pb2,
    inference_pb2,
    inference_pb2_grpc,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_balancer import log_records
from bench_servers import BENCH_SAMPLING, HOST, PROMPTS, free_port, llama_server_ready, started
from routing_results import HAPROXY, ROUND_ROBIN, Outcome

NGINX_LEAST_CONN = "nginx-least-conn"
HAPROXY_STICKY = "haproxy-sticky"  # hashes the X-Session header (bench_prefix.py)
PEERS = (ROUND_ROBIN, NGINX_LEAST_CONN, HAPROXY)
CONTEXT_PER_SLOT = 1024


def gguf(packaged: str) -> Path:
    """The GGUF file of a packaged model on this machine."""
    if packaged == "smollm2-135m":
        return default_model_path()
    return resolve_model(desired_state_pb2.ModelSource(packaged=packaged), StateReport())


def prompt(index: int) -> str:
    """A numbered story opening: no server reuses a cached prompt."""
    return f"{index:05d}. {PROMPTS[index % len(PROMPTS)]}"


# ---- requests -----------------------------------------------------------------------------


# What one SSE event says: whether it carries text, and the tokens generated once it is the last.
Reading = tuple[bool, int | None]


def _sse_post(
    port: int,
    path: str,
    body: dict[str, object],
    timeout: float,
    read: Callable[[dict[str, Any]], Reading],
) -> Outcome:
    """POST ``body`` and read the SSE stream to its last event, timed from now (blocking, in a
    thread). ``read`` raises ValueError on an event that reports a failure."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        if response.status in (429, 502, 503, 504):
            return Outcome("rejected")
        if response.status != 200:
            return Outcome("error")
        ttft = math.nan
        for line in response:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            text, last_tokens = read(json.loads(line[len(b"data: ") :]))
            if text and math.isnan(ttft):
                ttft = time.perf_counter() - start
            if last_tokens is not None:
                return Outcome("ok", ttft, time.perf_counter() - start, last_tokens)
        return Outcome("error")
    except (OSError, http.client.HTTPException, ValueError):
        return Outcome("error")
    finally:
        connection.close()


def _llama_server_event(event: dict[str, Any]) -> Reading:
    return bool(event.get("content")), int(event["tokens_predicted"]) if event.get("stop") else None


def _openai_event(event: dict[str, Any]) -> Reading:
    if "error" in event:
        raise ValueError(event["error"])
    text = bool(event["choices"] and event["choices"][0]["text"])
    usage = event.get("usage")
    return text, int(usage["completion_tokens"]) if usage else None


def http_request(port: int, index: int, tokens: int, timeout: float) -> Outcome:
    """One streaming llama-server `/completion` through a proxy."""
    body: dict[str, object] = {
        "prompt": prompt(index),
        "n_predict": tokens,
        "stream": True,
        "cache_prompt": False,
        "temperature": BENCH_SAMPLING.temperature,
        "repeat_penalty": BENCH_SAMPLING.repeat_penalty,
    }
    return _sse_post(port, "/completion", body, timeout, _llama_server_event)


def openai_request(port: int, index: int, tokens: int, timeout: float) -> Outcome:
    """One streaming `/v1/completions` through our balancer's OpenAI API, with the same client
    that drives the peers."""
    body: dict[str, object] = {
        "model": "any",  # an alias: our bench fleets run two models, and a name is not routed on
        "prompt": prompt(index),
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": BENCH_SAMPLING.temperature,
        "repeat_penalty": BENCH_SAMPLING.repeat_penalty,
    }
    return _sse_post(port, "/v1/completions", body, timeout, _openai_event)


Reply = inference_pb2.InferenceServiceGenerateResponse | agent_pb2.GenerateResponse


def _generation(index: int, tokens: int) -> generation_pb2.GenerationInput:
    return generation_pb2.GenerationInput(
        prompt=prompt(index), max_tokens=tokens, sampling=BENCH_SAMPLING
    )


async def _outcome(replies: AsyncIterable[Reply]) -> Outcome:
    """Read one Generate stream to its summary: timings from now, or how it failed."""
    start = time.perf_counter()
    ttft = math.nan
    try:
        async for reply in replies:
            if reply.text and math.isnan(ttft):
                ttft = time.perf_counter() - start
            if reply.HasField("summary"):
                total = time.perf_counter() - start
                return Outcome("ok", ttft, total, reply.summary.usage.completion_tokens)
    except grpc.aio.AioRpcError as error:
        refused = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        return Outcome("rejected" if error.code() in refused else "error")
    return Outcome("error")


async def grpc_request(
    stub: inference_pb2_grpc.InferenceServiceAsyncStub, index: int, tokens: int, limit_s: float
) -> Outcome:
    """One InferenceService/Generate stream through our balancer."""
    request = inference_pb2.InferenceServiceGenerateRequest(input=_generation(index, tokens))
    replies: AsyncIterable[Reply] = stub.Generate(request, timeout=limit_s)
    return await _outcome(replies)


async def agent_request(
    stub: agent_pb2_grpc.AgentServiceAsyncStub, index: int, tokens: int, limit_s: float
) -> Outcome:
    """One AgentService/Generate stream straight to an agent, past the balancer."""
    request = agent_pb2.GenerateRequest(input=_generation(index, tokens))
    replies: AsyncIterable[Reply] = stub.Generate(request, timeout=limit_s)
    return await _outcome(replies)


# ---- fleets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaddlerFleet:
    """Our balancer's inference stub, the first agent's own stub (to reach it directly), and
    the process ids of the balancer and the agents."""

    inference: inference_pb2_grpc.InferenceServiceAsyncStub
    first_agent: agent_pb2_grpc.AgentServiceAsyncStub
    pids: tuple[int, ...]
    openai_port: int


@contextlib.asynccontextmanager
async def paddler_fleet(
    fleet: Sequence[tuple[str, int]],
    routing: str | None,
    args: argparse.Namespace,
    log_dir: Path,
    context_per_slot: int = CONTEXT_PER_SLOT,
    prompt_cache: bool = False,
) -> AsyncIterator[PaddlerFleet]:
    """Our balancer (``routing``: its policy, None: its default) and one agent per server, all
    registered; the agents keep prompt caches (in slots and host memory) only if asked."""
    paddler = [sys.executable, "-m", "paddler"]
    policy = ["--routing", routing] if routing else []
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        balancer_log = log_dir / "balancer.log"
        balancer = stack.enter_context(
            started(
                "balancer",
                [
                    *paddler, "balancer", "--inference-addr", f"{HOST}:0",
                    "--openai-addr", f"{HOST}:0", "--web-addr", "", "--openai-model-alias", "any",
                    "--management-addr", f"{HOST}:0", "--max-buffered-requests", "1000",
                    "--buffered-request-timeout", str(args.request_timeout), *policy,
                ],
                log_dir,
            )
        )  # fmt: skip
        listening = await first_record(balancer_log, "balancer listening")
        pids = [balancer.pid]
        for number, (model, slots) in enumerate(fleet):
            agent = stack.enter_context(
                started(
                    f"agent-{number}",
                    [
                        *paddler, "agent", "--name", f"agent-{number}-{model}",
                        "--model", str(gguf(model)), "--slots", str(slots), "--threads", "1",
                        "--context-size", str(context_per_slot),
                        "--prompt-cache" if prompt_cache else "--no-prompt-cache",
                        "--host", HOST, "--port", "0", "--balancer", str(listening["management"]),
                    ],
                    log_dir,
                )
            )  # fmt: skip
            pids.append(agent.pid)
        for number in range(len(fleet)):
            await first_record(log_dir / f"agent-{number}.log", "agent ready")
        await first_record(balancer_log, "agent registered", count=len(fleet))
        first = await first_record(log_dir / "agent-0.log", "agent listening")
        async with (
            grpc.aio.insecure_channel(str(listening["inference"])) as channel,
            grpc.aio.insecure_channel(str(first["address"])) as direct,
        ):
            yield PaddlerFleet(
                inference_pb2_grpc.InferenceServiceStub(channel),
                agent_pb2_grpc.AgentServiceStub(direct),
                tuple(pids),
                split_host_port(str(listening["openai"]))[1],
            )


async def first_record(
    path: Path, event: str, count: int = 1, limit_s: float = 180
) -> dict[str, object]:
    return await asyncio.to_thread(_wait_records, path, event, count, limit_s)


def _wait_records(path: Path, event: str, count: int, limit_s: float) -> dict[str, object]:
    deadline = time.monotonic() + limit_s
    while len(records := log_records(path, event) if path.exists() else []) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {count} {event!r} lines in {path}")
        time.sleep(0.2)
    record: dict[str, object] = records[0]
    return record


@contextlib.contextmanager
def llama_servers(
    fleet: Sequence[tuple[str, int]],
    binary: Path,
    log_dir: Path,
    context_per_slot: int = CONTEXT_PER_SLOT,
) -> Iterator[tuple[list[int], list[int]]]:
    """One llama-server per server of the fleet (with its default prompt cache in host memory,
    which requests opt out of per request); yields their ports and process ids."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        ports, pids = [], []
        for number, (model, slots) in enumerate(fleet):
            port = free_port()
            command = [
                str(binary), "-m", str(gguf(model)), "-t", "1", "-np", str(slots),
                "-c", str(slots * context_per_slot), "--no-repack", "--host", HOST,
                "--port", str(port),
            ]  # fmt: skip
            server = stack.enter_context(started(f"llama-server-{number}", command, log_dir))
            ports.append(port)
            pids.append(server.pid)
        yield ports, pids


def nginx_config(ports: Sequence[int], slots: Sequence[int], listen: int, policy: str) -> str:
    """nginx in front of the llama-servers: round robin, or least_conn."""
    del slots  # nginx knows nothing of slots: that is the point of the comparison
    servers = "\n".join(f"    server {HOST}:{port};" for port in ports)
    balance = "least_conn;" if policy == NGINX_LEAST_CONN else ""
    return f"""
user root;
worker_processes 1;
daemon off;
pid nginx.pid;
error_log error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream fleet {{
    {balance}
{servers}
  }}
  server {{
    listen {HOST}:{listen};
    location / {{
      proxy_pass http://fleet;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""


def haproxy_config(
    ports: Sequence[int], slots: Sequence[int], listen: int, policy: str = HAPROXY
) -> str:
    """haproxy leastconn with maxconn = each server's slots (its own FIFO queue beyond), or
    sticky sessions: a consistent hash of the X-Session header picks the server. Streams go out
    as they come (`http-no-delay`: else haproxy holds a stream's first events for up to about
    200 ms, measured here, waiting to fill packets)."""
    sticky = policy == HAPROXY_STICKY
    servers = "\n".join(
        f"  server s{number} {HOST}:{port}" + ("" if sticky else f" maxconn {count}")
        for number, (port, count) in enumerate(zip(ports, slots, strict=True))
    )
    balance = "balance hdr(X-Session)\n  hash-type consistent" if sticky else "balance leastconn"
    return f"""
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout queue 600s
frontend front
  bind {HOST}:{listen}
  default_backend fleet
backend fleet
  {balance}
  option http-no-delay
{servers}
"""


@contextlib.contextmanager
def proxy(
    front: str, ports: Sequence[int], slots: Sequence[int], log_dir: Path
) -> Iterator[tuple[int, int]]:
    """Run nginx or haproxy in front of ``ports``; yields the port it listens on and its process
    group (nginx forks its worker)."""
    listen = free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"{front}-", dir=log_dir))
    if front in (HAPROXY, HAPROXY_STICKY):
        config = folder / "haproxy.cfg"
        config.write_text(haproxy_config(ports, slots, listen, front))
        command = ["haproxy", "-db", "-f", str(config)]
    else:
        config = folder / "nginx.conf"
        config.write_text(nginx_config(ports, slots, listen, front))
        command = ["nginx", "-p", str(folder), "-c", str(config)]
    with started(front, command, log_dir) as process:
        deadline = time.monotonic() + 30
        while not llama_server_ready(listen):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{front} did not answer on port {listen}")
            time.sleep(0.2)
        yield listen, process.pid
