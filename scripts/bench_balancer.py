"""Benchmark the balancer's overhead: the same load straight to an agent and through the balancer.

Starts one balancer and one agent registered with it. For each concurrency it runs the same
closed loop as `bench_agent.py` (its prompts, numbered so that none hits the agent's prefix
cache; tokens per request; requests per worker) straight to the agent's `AgentService/Generate`
and through the balancer's `InferenceService/Generate`, alternating direct, balancer, direct,
balancer... for `--rounds` rounds, so drift over time hits both paths alike. Per path, tokens/s
is the median of its rounds (a burst of outside load that hits one round does not move it); the
percentiles are over the requests of all rounds (time to first token) or the gaps between
consecutive text pieces of all their streams (inter-token latency). The throughput ratio is the
median over the rounds of each balancer round / the direct round just before it (a paired
design, so drift between rounds cancels). The time the balancer adds to the first token is
measured per request as client TTFT minus the agent's own TTFT (from the summary): raw TTFT is
dominated by queueing and prefill, whose phase against the decode steps moves its p50 by tens
of ms from round to round on either path, far more than a relay hop; the raw difference is
printed too. In a back-to-back loop a request follows the end of the previous reply, which
ends on a decode step, so whether it catches the agent's next step is decided by a race of a
millisecond or two; `--think-ms` spreads requests over the step. `--placement` pins the
processes (the balancer alone on a core, as in its own pod; or the agent alone). Prints a
markdown table with both paths, the ratios and PASS/FAIL against the targets.

With `--secure` it compares two balanced paths instead: a balancer and agent with nothing on
(plain) against a second pair with every security piece on (TLS on every hop, mutual between
balancer and agent, the agent token both ways, the client's API key checked on every call),
alternating rounds between them. Targets: >= 0.97x tokens/s and < 1 ms more transport time
to the first token.

Run: `.venv/bin/python scripts/bench_balancer.py` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from paddler.agent.default_model import default_model_path
from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    generation_pb2,
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import RunResult, closed_loop
from bench_servers import (
    AGENT,
    BENCH_SAMPLING,
    HOST,
    PROMPTS,
    RequestFn,
    Sample,
    log,
    started,
    wait_ready,
)
from secure_cluster import SecureFiles, make_secure_files

BALANCER = "balancer"
DIRECT = "direct"
OPENAI = "openai"
PLAIN = "plain"
SECURE = "secure"
AGENT_NAME = "bench"
TARGET_RATIO = 0.98
TARGET_ADDED_TTFT_MS = 2.0
SECURE_TARGET_RATIO = 0.97
SECURE_TARGET_ADDED_TTFT_MS = 1.0
RETRY_DELAY_S = 0.001

Reply = agent_pb2.GenerateResponse | inference_pb2.InferenceServiceGenerateResponse
# Opens one Generate stream on a path: (input, timeout in seconds) -> replies.
OpenStream = Callable[[generation_pb2.GenerationInput, float], AsyncIterable[Reply]]


@dataclass(frozen=True)
class Stream(Sample):
    """A sample plus the seconds between its consecutive text pieces and the agent's own time
    to first token (from the request reaching the agent to its first token)."""

    gaps: tuple[float, ...]
    agent_ttft: float


def log_records(log_path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log records of `event` so far; only whole lines (the last may be half written)."""
    lines = log_path.read_text(errors="replace").split("\n")[:-1]
    return [json.loads(line) for line in lines if line.startswith("{") and f'"{event}"' in line]


async def listening(
    process: subprocess.Popen[bytes], log_path: Path, event: str, limit_s: float
) -> dict[str, Any]:
    """The server's `event` JSON log record, which says where it listens (port 0 included)."""
    records: list[dict[str, Any]] = []

    async def probe() -> bool:
        records.extend(log_records(log_path, event))
        return bool(records)

    await wait_ready(process, probe, limit_s)
    return records[0]


@contextlib.asynccontextmanager
async def balanced_agent(
    args: argparse.Namespace, log_dir: Path, secure: SecureFiles | None = None
) -> AsyncIterator[dict[str, str]]:
    """A balancer and one agent registered with it and ready (with every security piece on
    when ``secure`` is given); yields the agent's, the balancer's gRPC and its OpenAI API
    addresses by path."""
    tag = f"-{SECURE}" if secure else ""
    balancer_command = [
        *args.balancer_prefix, sys.executable, "-m", "paddler", "balancer",
        "--inference-addr", f"{HOST}:0", "--management-addr", f"{HOST}:0",
        "--openai-addr", f"{HOST}:0", "--web-addr", f"{HOST}:0",
        *(secure.balancer_flags() if secure else []),
    ]  # fmt: skip
    with started(BALANCER + tag, balancer_command, log_dir) as balancer:
        addresses = await listening(
            balancer, log_dir / f"{BALANCER}{tag}.log", "balancer listening", args.startup_timeout
        )
        agent_command = [
            *args.agent_prefix, sys.executable, "-m", "paddler", "agent",
            "--model", str(args.model), "--slots", str(args.slots), "--threads", str(args.threads),
            "--context-size", str(args.context_size), "--host", HOST, "--port", "0",
            "--balancer", addresses["management"], "--name", AGENT_NAME,
            *(secure.agent_flags() if secure else []),
        ]  # fmt: skip
        with started(AGENT + tag, agent_command, log_dir) as agent:
            record = await listening(
                agent, log_dir / f"{AGENT}{tag}.log", "agent listening", args.startup_timeout
            )
            management_address = addresses["management"]
            async with (
                secure.channel(management_address)
                if secure
                else grpc.aio.insecure_channel(management_address)
            ) as channel:
                management = management_pb2_grpc.ManagementServiceStub(channel)
                metadata = secure.admin_metadata() if secure else None

                async def registered() -> bool:
                    try:
                        reply = await management.ListAgents(
                            management_pb2.ListAgentsRequest(), timeout=2, metadata=metadata
                        )
                    except grpc.aio.AioRpcError:
                        return False
                    return any(a.name == AGENT_NAME and a.ready for a in reply.agents)

                await wait_ready(agent, registered, args.startup_timeout)
            log(f"agent {record['address']} registered with the balancer and ready")
            yield {
                DIRECT: record["address"],
                BALANCER: addresses["inference"],
                OPENAI: addresses["openai"],
            }


def request_length(prompt: str, tokens: int, spread: int) -> int:
    """Tokens to generate for `prompt`: `tokens` moved by up to `spread`, the same on both paths.

    Streams of one length run in lock step in a closed loop (they end on one decode step and
    the next ones arrive together), which makes time to first token swing by a prefill step
    from round to round on either path; real traffic has replies of many lengths.
    """
    if spread == 0 or len(PROMPTS) < 2:
        return tokens
    position = PROMPTS.index(prompt) / (len(PROMPTS) - 1)  # 0 .. 1
    return tokens + round(spread * (2 * position - 1))


# Where each process runs (`--placement`). The last `--threads` CPUs are the agent's.
SHARED = "shared"  # the agent, the balancer and the load generator on all CPUs
BALANCER_CORE = "balancer-core"  # the balancer alone on the other CPUs; the load with the agent
AGENT_CORE = "agent-core"  # the agent alone; the balancer and the load on the other CPUs
PLACEMENTS = {
    SHARED: "agent, balancer and load share all CPUs",
    BALANCER_CORE: "balancer alone on CPUs {others}; agent and load on {agent}",
    AGENT_CORE: "agent alone on CPUs {agent}; balancer and load on {others}",
}


def placement(args: argparse.Namespace) -> None:
    """Pin the servers (command prefixes) and this load generator (its own affinity) as
    `--placement` says, and set `args.placed` to a description."""
    cpus = sorted(os.sched_getaffinity(0))
    agent_cpus, other_cpus = cpus[-args.threads :], cpus[: -args.threads]
    agent, others = (",".join(map(str, group)) for group in (agent_cpus, other_cpus))
    args.placed = PLACEMENTS[args.placement].format(agent=agent, others=others)
    args.agent_prefix, args.balancer_prefix = [], []
    if args.placement == SHARED:
        return
    args.agent_prefix = ["taskset", "-c", agent]
    args.balancer_prefix = ["taskset", "-c", others]
    os.sched_setaffinity(0, agent_cpus if args.placement == BALANCER_CORE else other_cpus)


def requester(
    open_stream: OpenStream, args: argparse.Namespace, numbers: Iterator[int]
) -> RequestFn:
    """One request on a path, timed; RESOURCE_EXHAUSTED before any text is retried (counted).

    Each prompt starts with the next of `numbers` (shared by both paths): the agent keeps a slot's
    KV cache for a later prompt with the same prefix, and cache hits would differ between paths.
    """

    think = random.Random(0)  # each path draws the same sequence of think times

    async def request(prompt: str) -> tuple[Sample, int]:
        await asyncio.sleep(think.uniform(0, args.think_ms / 1000))
        generation_input = generation_pb2.GenerationInput(
            prompt=f"{next(numbers):04d}. {prompt}",
            max_tokens=request_length(prompt, args.tokens, args.length_spread),
            sampling=BENCH_SAMPLING,
        )
        start = time.perf_counter()
        # The agent does not queue: a slot freed a moment late can reject a direct request at
        # concurrency == slots. The balancer buffers instead.
        for retries in range(100):
            pieces: list[float] = []
            try:
                async for reply in open_stream(generation_input, args.request_timeout):
                    if reply.text:
                        pieces.append(time.perf_counter())
                    if reply.HasField("summary"):
                        if not pieces:
                            raise RuntimeError("Generate: no text before the summary")
                        gaps = tuple(b - a for a, b in itertools.pairwise(pieces))
                        tokens = reply.summary.usage.completion_tokens
                        agent_ttft = reply.summary.time_to_first_token.ToNanoseconds() / 1e9
                        seconds = time.perf_counter() - start
                        sample = Stream(pieces[0] - start, tokens, seconds, gaps, agent_ttft)
                        return sample, retries
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or pieces:
                    raise
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            raise RuntimeError("Generate: stream ended without a summary")
        raise RuntimeError("Generate: RESOURCE_EXHAUSTED 100 times in a row")

    return request


def pooled(runs: Sequence[RunResult]) -> RunResult:
    """Several runs as one: all samples, summed wall time and retries."""
    return RunResult(
        tuple(s for r in runs for s in r.samples),
        sum(r.wall for r in runs),
        sum(r.retries for r in runs),
    )


def median_rate(runs: Sequence[RunResult]) -> float:
    """Median of the runs' tokens/s."""
    return statistics.median(r.tokens_per_second for r in runs)


def transport_p50_ms(result: RunResult) -> float:
    """Median of (time to first token at the client - the agent's own), in ms: the time spent
    getting the request to the agent and its first piece back, without the queueing and prefill
    whose phase against the decode steps makes raw TTFT swing from round to round."""
    spans = [s.ttft - s.agent_ttft for s in result.samples if isinstance(s, Stream)]
    return 1000 * statistics.median(spans)


def itl_p50_ms(result: RunResult) -> float:
    """Nearest-rank median of the gaps between consecutive text pieces of all streams, in ms."""
    gaps = [g for s in result.samples if isinstance(s, Stream) for g in s.gaps]
    return 1000 * statistics.median_low(gaps)


async def bench(args: argparse.Namespace, log_dir: Path) -> dict[int, dict[str, list[RunResult]]]:
    """Per concurrency and path, the runs of every round, the paths alternating."""
    async with (
        balanced_agent(args, log_dir) as addresses,
        grpc.aio.insecure_channel(addresses[DIRECT]) as agent_channel,
        grpc.aio.insecure_channel(addresses[BALANCER]) as inference_channel,
    ):
        agent = agent_pb2_grpc.AgentServiceStub(agent_channel)
        inference = inference_pb2_grpc.InferenceServiceStub(inference_channel)

        def direct(
            generation_input: generation_pb2.GenerationInput, timeout: float
        ) -> AsyncIterable[agent_pb2.GenerateResponse]:
            return agent.Generate(
                agent_pb2.GenerateRequest(input=generation_input), timeout=timeout
            )

        def balanced(
            generation_input: generation_pb2.GenerationInput, timeout: float
        ) -> AsyncIterable[inference_pb2.InferenceServiceGenerateResponse]:
            request = inference_pb2.InferenceServiceGenerateRequest(input=generation_input)
            return inference.Generate(request, timeout=timeout)

        numbers = itertools.count()
        paths = {
            DIRECT: requester(direct, args, numbers),
            BALANCER: requester(balanced, args, numbers),
        }
        return await rounds(paths, args)


async def bench_secure(
    args: argparse.Namespace, log_dir: Path
) -> dict[int, dict[str, list[RunResult]]]:
    """Per concurrency, the runs of a plain balanced path and of one with every security piece
    on, the paths alternating."""
    secure = make_secure_files(log_dir / "secure")
    async with (
        balanced_agent(args, log_dir) as plain_addresses,
        balanced_agent(args, log_dir, secure) as secure_addresses,
        grpc.aio.insecure_channel(plain_addresses[BALANCER]) as plain_channel,
        secure.channel(secure_addresses[BALANCER]) as secure_channel,
    ):
        plain = inference_pb2_grpc.InferenceServiceStub(plain_channel)
        sealed = inference_pb2_grpc.InferenceServiceStub(secure_channel)
        key = secure.client_metadata()

        def plain_stream(
            generation_input: generation_pb2.GenerationInput, timeout: float
        ) -> AsyncIterable[inference_pb2.InferenceServiceGenerateResponse]:
            request = inference_pb2.InferenceServiceGenerateRequest(input=generation_input)
            return plain.Generate(request, timeout=timeout)

        def secure_stream(
            generation_input: generation_pb2.GenerationInput, timeout: float
        ) -> AsyncIterable[inference_pb2.InferenceServiceGenerateResponse]:
            request = inference_pb2.InferenceServiceGenerateRequest(input=generation_input)
            return sealed.Generate(request, timeout=timeout, metadata=key)

        numbers = itertools.count()
        paths = {
            PLAIN: requester(plain_stream, args, numbers),
            SECURE: requester(secure_stream, args, numbers),
        }
        return await rounds(paths, args)


async def rounds(
    paths: dict[str, RequestFn], args: argparse.Namespace
) -> dict[int, dict[str, list[RunResult]]]:
    """A warm-up per path, then per concurrency ``--rounds`` runs of each path, alternating."""
    for request in paths.values():  # warm-up: connections, every slot's first decode
        await closed_loop(request, max(args.concurrency), 1)
    results: dict[int, dict[str, list[RunResult]]] = {}
    for concurrency in args.concurrency:
        results[concurrency] = {name: [] for name in paths}
        for round_number in range(1, args.rounds + 1):
            for name, request in paths.items():
                run = await closed_loop(request, concurrency, args.requests_per_worker)
                log(
                    f"c={concurrency} round {round_number}/{args.rounds} {name}: "
                    f"{run.tokens_per_second:.1f} tok/s, TTFT p50 {run.ttft_ms(0.5):.1f} ms "
                    f"p99 {run.ttft_ms(0.99):.1f} ms, ITL p50 {itl_p50_ms(run):.1f} ms, "
                    f"{run.mean_tokens:.1f} tokens/request, {run.retries} retries"
                )
                results[concurrency][name].append(run)
    return results


@dataclass(frozen=True)
class Comparison:
    """Which path is the baseline, which is measured against it, and the targets."""

    baseline: str
    compared: str
    target_ratio: float
    target_added_ms: float


OVERHEAD = Comparison(DIRECT, BALANCER, TARGET_RATIO, TARGET_ADDED_TTFT_MS)
SECURITY = Comparison(PLAIN, SECURE, SECURE_TARGET_RATIO, SECURE_TARGET_ADDED_TTFT_MS)


def markdown_table(
    results: dict[int, dict[str, list[RunResult]]], comparison: Comparison = OVERHEAD
) -> str:
    """One row per concurrency: both paths over their rounds, the ratios, the verdict."""
    base, other = comparison.baseline, comparison.compared
    header = [
        "Concurrency",
        f"{base} tok/s",
        f"{other} tok/s",
        f"paired ratio (target >= {comparison.target_ratio})",
        f"{base} TTFT p50 / p99 (ms)",
        f"{other} TTFT p50 / p99 (ms)",
        "raw TTFT p50 difference (ms)",
        f"added TTFT p50: transport {other} - {base} (ms, target < {comparison.target_added_ms:g})",
        f"ITL p50 {base} / {other} (ms)",
        "result",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for concurrency, runs in results.items():
        direct, balanced = pooled(runs[base]), pooled(runs[other])
        direct_rate, balanced_rate = median_rate(runs[base]), median_rate(runs[other])
        pairs = list(zip(runs[base], runs[other], strict=True))
        ratio = statistics.median(b.tokens_per_second / d.tokens_per_second for d, b in pairs)
        raw_difference = balanced.ttft_ms(0.5) - direct.ttft_ms(0.5)
        added = transport_p50_ms(balanced) - transport_p50_ms(direct)
        passed = ratio >= comparison.target_ratio and added < comparison.target_added_ms
        row = [
            str(concurrency),
            f"{direct_rate:.1f}",
            f"{balanced_rate:.1f}",
            f"{ratio:.3f}",
            f"{direct.ttft_ms(0.5):.1f} / {direct.ttft_ms(0.99):.1f}",
            f"{balanced.ttft_ms(0.5):.1f} / {balanced.ttft_ms(0.99):.1f}",
            f"{raw_difference:+.1f}",
            f"{transport_p50_ms(balanced):.1f} - {transport_p50_ms(direct):.1f} = {added:+.1f}",
            f"{itl_p50_ms(direct):.1f} / {itl_p50_ms(balanced):.1f}",
            "PASS" if passed else "FAIL",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(args: argparse.Namespace, results: dict[int, dict[str, list[RunResult]]]) -> str:
    """Setup line, then per concurrency the per-round tok/s range of each path and any retries."""
    text = (
        f"Model `{args.model.name}`, one agent ({args.threads} threads, {args.slots} slots, "
        f"context {args.context_size} per slot; {args.placed}"
        f"), {args.tokens} +- {args.length_spread} tokens per request, "
        f"{args.requests_per_worker} requests per worker, closed loop"
        + (f" with 0-{args.think_ms:g} ms think time" if args.think_ms else "")
        + f", {args.rounds} round(s) "
        + (
            "per path alternating plain / secure (a second balancer and agent with TLS on every "
            "hop, mutual between them, and every credential checked)"
            if args.secure
            else "per path alternating direct / balancer"
        )
        + "; tok/s is the median of the rounds, the percentiles are over the requests of all "
        "rounds; the paired ratio is the median over the rounds of each round of the second "
        "path / the round of the first before it; transport = client TTFT - the agent's own "
        "TTFT."
    )
    for concurrency, runs in results.items():
        ranges = []
        for name, path_runs in runs.items():
            rates = [r.tokens_per_second for r in path_runs]
            path = pooled(path_runs)
            ranges.append(
                f"{name} {min(rates):.1f}-{max(rates):.1f} tok/s, "
                f"{path.mean_tokens:.1f} tokens/request, {path.retries} RESOURCE_EXHAUSTED retries"
            )
        text += f"\nConcurrency {concurrency}, per round: {'; '.join(ranges)}."
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF (default: SmolLM2-135M Q4_1)"
    )
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="agent threads")
    parser.add_argument(
        "--placement",
        choices=list(PLACEMENTS),
        default=SHARED,
        help=(
            f"{SHARED}: every process on every CPU; {BALANCER_CORE}: the balancer alone on the "
            f"CPUs before the agent's last --threads, the load generator with the agent (as when "
            f"the balancer has its own pod); {AGENT_CORE}: the agent alone, the balancer and the "
            "load on the other CPUs"
        ),
    )
    parser.add_argument("--context-size", type=int, default=1024, help="context per slot")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8],
        help="comma-separated closed-loop concurrencies (default 1,8)",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument(
        "--length-spread",
        type=int,
        default=16,
        help="vary tokens per request by up to this many, by prompt (0: all alike, lock step)",
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help=(
            "each worker waits a random 0..N ms before each request (not timed), so requests "
            "reach the agent at any point of its decode step, not just after a reply ended"
        ),
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="compare a plain balanced path with one that has TLS on every hop and every "
        "credential checked (two balancer-agent pairs, rounds alternating)",
    )
    parser.add_argument("--requests-per-worker", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="runs per path and concurrency")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds")
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = default_model_path()
    if not args.model.is_file():
        parser.error(f"no model file at {args.model}")
    if min(*args.concurrency, args.requests_per_worker, args.rounds) < 1:
        parser.error("--concurrency, --requests-per-worker and --rounds must be >= 1")
    if args.think_ms < 0:
        parser.error("--think-ms must be >= 0")
    if args.tokens - args.length_spread < 2 or args.length_spread < 0:
        parser.error("--tokens minus --length-spread must be >= 2: inter-token latency needs two")
    if args.placement != SHARED and len(os.sched_getaffinity(0)) <= args.threads:
        parser.error(f"--placement {args.placement} needs more CPUs than --threads")
    placement(args)
    if max(args.concurrency) > args.slots:
        parser.error("--concurrency above --slots: the agent rejects requests beyond its slots")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="paddler-bench-"))
    if args.secure:
        results = asyncio.run(bench_secure(args, log_dir))
        print(markdown_table(results, SECURITY))
    else:
        results = asyncio.run(bench(args, log_dir))
        print(markdown_table(results))
    print()
    print(notes(args, results))


if __name__ == "__main__":
    main()
