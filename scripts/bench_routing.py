"""Benchmark routing: the same seeded open-loop arrivals through our balancer and through the
proxies people use instead (nginx round robin and least_conn, haproxy leastconn with maxconn set
to each server's slots by hand) over llama-servers of the same models, threads and slots.

A fleet is a list of servers (model, slots), one llama.cpp thread each. For each fleet the
script first measures the capacity of our fleet (requests/s in a closed loop with one worker
per slot), then for each load (a share of that capacity) and seed it sends the same arrivals
(Poisson, or bursts of Poisson-distributed size) to every front and reports per front:
completed, rejected, errors, time to first token p50/p90/p99, end-to-end p99 and tokens/s.

Run: `.venv/bin/python scripts/bench_routing.py` (see `--help`). Needs nginx and haproxy
(`apt-get install nginx haproxy`) and builds llama-server once (`llama_server_build.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from paddler.agent.default_model import default_model_path
from paddler.agent.model_source import resolve_model
from paddler.agent.state_report import StateReport
from paddler.v1 import desired_state_pb2, generation_pb2, inference_pb2, inference_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import (
    BENCH_SAMPLING,
    HOST,
    PROMPTS,
    free_port,
    llama_server_ready,
    log,
    started,
)
from bench_balancer import log_records
from llama_server_build import ensure_llama_server

# Our balancer under each --routing policy, then the peers.
OURS = {"paddler-slots": "slots", "paddler-speed": "speed"}
NGINX_ROUND_ROBIN = "nginx-rr"
NGINX_LEAST_CONN = "nginx-least-conn"
HAPROXY = "haproxy-leastconn"
PEERS = (NGINX_ROUND_ROBIN, NGINX_LEAST_CONN, HAPROXY)
FRONTS = (*OURS, *PEERS)
# Fleets of servers (packaged model, slots) that differ in speed, not only in slots.
FLEETS: dict[str, tuple[tuple[str, int], ...]] = {
    "slots-1-3": (("smollm2-135m", 1), ("smollm2-135m", 3)),
    "models-2-2": (("smollm2-135m", 2), ("gemma3-270m", 2)),
}
PATTERNS = ("poisson", "bursty")
CONTEXT_PER_SLOT = 1024


@dataclass(frozen=True)
class Outcome:
    """One request: how it ended and its timings (seconds from its arrival)."""

    status: str  # "ok", "rejected" (503 / RESOURCE_EXHAUSTED / UNAVAILABLE) or "error"
    ttft: float = math.nan
    total: float = math.nan
    tokens: int = 0


@dataclass(frozen=True)
class Report:
    """One front, one fleet, load and seed."""

    front: str
    outcomes: tuple[Outcome, ...]
    wall: float

    def count(self, status: str) -> int:
        """Requests that ended with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    def quantile_ms(self, field: str, q: float) -> float:
        """Nearest-rank percentile of ``field`` over the completed requests, in ms."""
        values = sorted(getattr(o, field) for o in self.outcomes if o.status == "ok")
        if not values:
            return math.nan
        value: float = values[max(0, math.ceil(q * len(values)) - 1)]
        return 1000 * value

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over the run's wall time."""
        return sum(o.tokens for o in self.outcomes) / self.wall


def gguf(packaged: str) -> Path:
    """The GGUF file of a packaged model on this machine."""
    if packaged == "smollm2-135m":
        return default_model_path()
    return resolve_model(desired_state_pb2.ModelSource(packaged=packaged), StateReport())


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


def prompt(index: int) -> str:
    """A numbered story opening: no server reuses a cached prompt."""
    return f"{index:05d}. {PROMPTS[index % len(PROMPTS)]}"


# ---- requests -----------------------------------------------------------------------------


def http_request(port: int, index: int, tokens: int, timeout: float) -> Outcome:
    """One streaming llama-server `/completion` through a proxy (blocking, in a thread)."""
    body = json.dumps(
        {
            "prompt": prompt(index),
            "n_predict": tokens,
            "stream": True,
            "cache_prompt": False,
            "temperature": BENCH_SAMPLING.temperature,
            "repeat_penalty": BENCH_SAMPLING.repeat_penalty,
        }
    )
    start = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("POST", "/completion", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status in (429, 502, 503, 504):
            return Outcome("rejected")
        if response.status != 200:
            return Outcome("error")
        ttft = math.nan
        for line in response:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[len(b"data: ") :])
            if math.isnan(ttft) and event.get("content"):
                ttft = time.perf_counter() - start
            if event.get("stop"):
                total = time.perf_counter() - start
                return Outcome("ok", ttft, total, int(event["tokens_predicted"]))
        return Outcome("error")
    except (OSError, http.client.HTTPException):
        return Outcome("error")
    finally:
        connection.close()


def _stream(
    stub: inference_pb2_grpc.InferenceServiceAsyncStub,
    request: inference_pb2.InferenceServiceGenerateRequest,
    limit_s: float,
) -> AsyncIterable[inference_pb2.InferenceServiceGenerateResponse]:
    return stub.Generate(request, timeout=limit_s)


async def grpc_request(
    stub: inference_pb2_grpc.InferenceServiceAsyncStub, index: int, tokens: int, limit_s: float
) -> Outcome:
    """One InferenceService/Generate stream through our balancer."""
    request = inference_pb2.InferenceServiceGenerateRequest(
        input=generation_pb2.GenerationInput(
            prompt=prompt(index), max_tokens=tokens, sampling=BENCH_SAMPLING
        )
    )
    start = time.perf_counter()
    ttft = math.nan
    try:
        async for reply in _stream(stub, request, limit_s):
            if reply.text and math.isnan(ttft):
                ttft = time.perf_counter() - start
            if reply.HasField("summary"):
                total = time.perf_counter() - start
                return Outcome("ok", ttft, total, reply.summary.usage.completion_tokens)
    except grpc.aio.AioRpcError as error:
        refused = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        return Outcome("rejected" if error.code() in refused else "error")
    return Outcome("error")


Send = Callable[[int], Awaitable[Outcome]]


async def open_loop(front: str, send: Send, times: Sequence[float]) -> Report:
    """Send request i at ``times[i]`` whatever the earlier ones are doing."""
    start = time.perf_counter()

    async def one(index: int, at: float) -> Outcome:
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        return await send(index)

    outcomes = await asyncio.gather(*(one(i, at) for i, at in enumerate(times)))
    return Report(front, tuple(outcomes), time.perf_counter() - start)


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


# ---- fleets -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def paddler_fleet(
    fleet: Sequence[tuple[str, int]], routing: str, args: argparse.Namespace, log_dir: Path
) -> AsyncIterator[inference_pb2_grpc.InferenceServiceAsyncStub]:
    """Our balancer and one agent per server, all registered; yields an inference stub."""
    paddler = [sys.executable, "-m", "paddler"]
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        balancer_log = log_dir / "balancer.log"
        stack.enter_context(
            started(
                "balancer",
                [
                    *paddler, "balancer", "--inference-addr", f"{HOST}:0",
                    "--management-addr", f"{HOST}:0", "--max-buffered-requests", "1000",
                    "--buffered-request-timeout", str(args.request_timeout),
                    "--routing", routing,
                ],
                log_dir,
            )
        )  # fmt: skip
        listening = await _first_record(balancer_log, "balancer listening")
        for number, (model, slots) in enumerate(fleet):
            stack.enter_context(
                started(
                    f"agent-{number}",
                    [
                        *paddler, "agent", "--name", f"agent-{number}-{model}",
                        "--model", str(gguf(model)), "--slots", str(slots), "--threads", "1",
                        "--context-size", str(CONTEXT_PER_SLOT), "--no-prompt-cache",
                        "--host", HOST, "--port", "0", "--balancer", str(listening["management"]),
                    ],
                    log_dir,
                )
            )  # fmt: skip
        for number in range(len(fleet)):
            await _first_record(log_dir / f"agent-{number}.log", "agent ready")
        await _first_record(balancer_log, "agent registered", count=len(fleet))
        async with grpc.aio.insecure_channel(str(listening["inference"])) as channel:
            yield inference_pb2_grpc.InferenceServiceStub(channel)


async def _first_record(
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
    fleet: Sequence[tuple[str, int]], binary: Path, log_dir: Path
) -> Iterator[list[int]]:
    """One llama-server per server of the fleet; yields their ports."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        ports = []
        for number, (model, slots) in enumerate(fleet):
            port = free_port()
            command = [
                str(binary), "-m", str(gguf(model)), "-t", "1", "-np", str(slots),
                "-c", str(slots * CONTEXT_PER_SLOT), "--no-repack", "--host", HOST,
                "--port", str(port),
            ]  # fmt: skip
            stack.enter_context(started(f"llama-server-{number}", command, log_dir))
            ports.append(port)
        yield ports


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


def haproxy_config(ports: Sequence[int], slots: Sequence[int], listen: int) -> str:
    """haproxy leastconn with maxconn = each server's slots (its own FIFO queue beyond)."""
    servers = "\n".join(
        f"  server s{number} {HOST}:{port} maxconn {count}"
        for number, (port, count) in enumerate(zip(ports, slots, strict=True))
    )
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
  balance leastconn
{servers}
"""


@contextlib.contextmanager
def proxy(front: str, ports: Sequence[int], slots: Sequence[int], log_dir: Path) -> Iterator[int]:
    """Run nginx or haproxy in front of ``ports``; yields the port it listens on."""
    listen = free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"{front}-", dir=log_dir))
    if front == HAPROXY:
        config = folder / "haproxy.cfg"
        config.write_text(haproxy_config(ports, slots, listen))
        command = ["haproxy", "-db", "-f", str(config)]
    else:
        config = folder / "nginx.conf"
        config.write_text(nginx_config(ports, slots, listen, front))
        command = ["nginx", "-p", str(folder), "-c", str(config)]
    with started(front, command, log_dir):
        deadline = time.monotonic() + 30
        while not llama_server_ready(listen):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{front} did not answer on port {listen}")
            time.sleep(0.2)
        yield listen


# ---- the run ------------------------------------------------------------------------------


Results = dict[tuple[float, int, str], Report]


async def bench_fleet(name: str, args: argparse.Namespace, log_dir: Path) -> Results:
    """All fronts, loads and seeds on one fleet: a report per (load, seed, front)."""
    fleet = FLEETS[name]
    slots = [count for _, count in fleet]
    results: Results = {}
    capacity = args.capacity or 0.0
    for front, routing in OURS.items():
        if front not in args.fronts and capacity:
            continue
        async with paddler_fleet(fleet, routing, args, log_dir / f"{name}-{front}") as stub:

            async def ours(index: int) -> Outcome:
                return await grpc_request(stub, index, args.tokens, args.request_timeout)

            if not capacity:
                capacity = await closed_loop_rate(ours, sum(slots), args.capacity_requests)
                log(f"{name}: capacity {capacity:.2f} requests/s ({args.tokens} tokens each)")
            if front not in args.fronts:
                continue
            for load in args.loads:
                for seed in args.seeds:
                    times = arrivals(args.pattern, load * capacity, args.requests, seed)
                    results[load, seed, front] = await open_loop(front, ours, times)
                    log(_summary(name, load, seed, results[load, seed, front]))
    peers = [front for front in PEERS if front in args.fronts]
    if not peers:
        return results
    binary = ensure_llama_server()
    pool = ThreadPoolExecutor(max_workers=args.requests)
    loop = asyncio.get_running_loop()
    with llama_servers(fleet, binary, log_dir / f"{name}-llama") as ports:
        deadline = time.monotonic() + 180
        while not all(llama_server_ready(port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("llama-servers did not become healthy")
            await asyncio.sleep(0.5)
        for front in peers:
            with proxy(front, ports, slots, log_dir) as listen:

                async def theirs(index: int, port: int = listen) -> Outcome:
                    return await loop.run_in_executor(
                        pool, http_request, port, index, args.tokens, args.request_timeout
                    )

                for load in args.loads:
                    for seed in args.seeds:
                        times = arrivals(args.pattern, load * capacity, args.requests, seed)
                        results[load, seed, front] = await open_loop(front, theirs, times)
                        log(_summary(name, load, seed, results[load, seed, front]))
    pool.shutdown()
    return results


def as_json(fleet: str, results: Results) -> list[dict[str, object]]:
    """Every request's outcome, per run, for plots (``scripts/plot_routing.py``)."""
    return [
        {
            "fleet": fleet, "load": load, "seed": seed, "front": front, "wall": report.wall,
            "outcomes": [[o.status, o.ttft, o.total, o.tokens] for o in report.outcomes],
        }
        for (load, seed, front), report in sorted(results.items())
    ]  # fmt: skip


def _summary(fleet: str, load: float, seed: int, report: Report) -> str:
    return (
        f"{fleet} load {load:.0%} seed {seed} {report.front}: ok {report.count('ok')}, "
        f"TTFT p99 {report.quantile_ms('ttft', 0.99):.0f} ms"
    )


def _row(fleet: str, load: float, seed: int, report: Report) -> str:
    cells = [
        fleet, f"{load:.0%}", str(seed), report.front, str(report.count("ok")),
        str(report.count("rejected")), str(report.count("error")),
        *(f"{report.quantile_ms('ttft', q):.0f}" for q in (0.5, 0.9, 0.99)),
        f"{report.quantile_ms('total', 0.99):.0f}", f"{report.tokens_per_second:.1f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| fleet | load | seed | front | completed | rejected | errors | TTFT p50 ms | TTFT p90 ms "
    "| TTFT p99 ms | end-to-end p99 ms | tok/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleets", nargs="+", choices=sorted(FLEETS), default=sorted(FLEETS))
    parser.add_argument("--fronts", nargs="+", choices=FRONTS, default=list(FRONTS))
    parser.add_argument("--pattern", choices=PATTERNS, default="poisson")
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
    parser.add_argument("--json", type=Path, help="also write every outcome to this file")
    parser.add_argument(
        "--capacity", type=float, help="requests/s of the fleet, as measured before (skips it)"
    )
    args = parser.parse_args(argv)
    if args.capacity is not None and len(args.fleets) != 1:
        parser.error("--capacity is one fleet's: give exactly one --fleets")
    if args.requests < 1 or args.tokens < 1 or not all(load > 0 for load in args.loads):
        parser.error("--requests, --tokens and every --loads value must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run every fleet and print one markdown table."""
    args = parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    log(f"logs in {log_dir}")
    rows: list[str] = []
    runs: list[dict[str, object]] = []
    for name in args.fleets:
        results = asyncio.run(bench_fleet(name, args, log_dir))
        rows.extend(_row(name, load, seed, report) for (load, seed, _), report in results.items())
        runs.extend(as_json(name, results))
        if args.json:
            args.json.write_text(json.dumps(runs))
    print(HEADER)
    print("\n".join(rows))
    print(
        f"\n{args.pattern} arrivals, {args.requests} requests per run, {args.tokens} tokens "
        "each, greedy, one llama.cpp thread per server, no prompt cache on either side."
    )


if __name__ == "__main__":
    main()
