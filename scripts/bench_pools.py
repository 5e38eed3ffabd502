"""Benchmark pools: two models (SmolLM2 and Gemma 3) behind one balancer, one pool each, against
a balancer per model, with the same arrivals per model, side by side.

Four agents run at once (one thread and `--slots` slots each): SmolLM2 and Gemma 3 in the pools
"default" and "gemma" of one balancer, and SmolLM2 and Gemma 3 again, each registered with a
balancer of its own. The setups take turns, round after round, so both see the same machine.
Two scenarios per round:

- steady: each model gets open-loop Poisson arrivals at `--rate` requests/s (the same seeded
  schedule in both setups) for `--seconds`;
- gemma saturated: Gemma gets a closed loop of `--saturation` streams (more than its slots:
  its buffer fills) while SmolLM2 gets its steady arrivals.

Per model and setup: TTFT p50/p99 and tokens/s over the rounds. The shared balancer passes when
each ratio (one balancer / a balancer each) is within the noise: the largest of `--tolerance` and
the spreads of either setup's per-round p50s (max/min - 1). CPU contention between the
models is the same in both setups (same agents, same load); what differs is only whether one
balancer routes both.

Run: `.venv/bin/python scripts/bench_pools.py` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from paddler.agent.model_source import resolve_model
from paddler.agent.state_report import StateReport
from paddler.v1 import (
    desired_state_pb2,
    generation_pb2,
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import RunResult
from bench_balancer import listening
from bench_servers import BENCH_SAMPLING, HOST, PROMPTS, Sample, log, started, wait_ready

SMOLLM, GEMMA = "smollm", "gemma"
PACKAGED = {SMOLLM: "smollm2-135m", GEMMA: "gemma3-270m"}
SHARED, SEPARATE = "one balancer", "a balancer each"
STEADY, SATURATED = "steady", "gemma saturated"


@dataclass(frozen=True)
class Target:
    """Where a model's requests go: a balancer's inference address and the model they name."""

    address: str
    model: str


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2, help="Slots of each agent.")
    parser.add_argument("--rate", type=float, default=1.0, help="Requests/s per model.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Arrivals per run.")
    parser.add_argument("--tokens", type=int, default=24, help="Tokens per request.")
    parser.add_argument("--saturation", type=int, default=6, help="Gemma streams when saturated.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per setup.")
    parser.add_argument("--tolerance", type=float, default=0.1, help="Least noise allowed.")
    parser.add_argument("--context-size", type=int, default=512)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    return parser.parse_args(argv)


async def _balancer(name: str, log_dir: Path, stack: contextlib.ExitStack) -> dict[str, str]:
    command = [
        sys.executable, "-m", "paddler", "balancer", "--inference-addr", f"{HOST}:0",
        "--management-addr", f"{HOST}:0", "--openai-addr", f"{HOST}:0",
        "--web-addr", f"{HOST}:0", "--max-buffered-requests", "1000",
        "--buffered-request-timeout", "600",
    ]  # fmt: skip
    process = stack.enter_context(started(name, command, log_dir))
    record = await listening(process, log_dir / f"{name}.log", "balancer listening", 60)
    return {"inference": record["inference"], "management": record["management"]}


async def _agent(
    name: str, model: str, pool: str, management: str, args: argparse.Namespace, log_dir: Path,
    stack: contextlib.ExitStack,
) -> None:  # fmt: skip
    path = resolve_model(desired_state_pb2.ModelSource(packaged=PACKAGED[model]), StateReport())
    command = [
        sys.executable, "-m", "paddler", "agent", "--model", str(path), "--pool", pool,
        "--slots", str(args.slots), "--threads", "1", "--context-size", str(args.context_size),
        "--host", HOST, "--port", "0", "--balancer", management, "--name", name,
    ]  # fmt: skip
    process = stack.enter_context(started(name, command, log_dir))
    async with grpc.aio.insecure_channel(management) as channel:
        stub = management_pb2_grpc.ManagementServiceStub(channel)

        async def ready() -> bool:
            agents = (await stub.ListAgents(management_pb2.ListAgentsRequest())).agents
            return any(agent.name == name and agent.ready for agent in agents)

        await wait_ready(process, ready, args.startup_timeout)
    log(f"{name} ({model}, pool {pool}) ready")


@contextlib.asynccontextmanager
async def setups(
    args: argparse.Namespace, log_dir: Path
) -> AsyncIterator[dict[str, dict[str, Target]]]:
    """Both setups running: each model's target in each."""
    with contextlib.ExitStack() as stack:
        shared = await _balancer("balancer-shared", log_dir, stack)
        own = {model: await _balancer(f"balancer-{model}", log_dir, stack) for model in PACKAGED}
        await _agent("shared-smollm", SMOLLM, "default", shared["management"], args, log_dir, stack)
        await _agent("shared-gemma", GEMMA, "gemma", shared["management"], args, log_dir, stack)
        for model, balancer in own.items():
            await _agent(
                f"own-{model}", model, "default", balancer["management"], args, log_dir, stack
            )
        yield {
            SHARED: {
                SMOLLM: Target(shared["inference"], ""),
                GEMMA: Target(shared["inference"], "gemma"),
            },
            SEPARATE: {model: Target(own[model]["inference"], "") for model in PACKAGED},
        }


async def _request(
    stub: inference_pb2_grpc.InferenceServiceAsyncStub, model: str, prompt: str, tokens: int
) -> Sample:
    request = inference_pb2.InferenceServiceGenerateRequest(
        model=model,
        input=generation_pb2.GenerationInput(
            prompt=prompt, max_tokens=tokens, sampling=BENCH_SAMPLING
        ),
    )
    started_at = time.perf_counter()
    first = 0.0
    count = 0
    async for response in stub.Generate(request, timeout=600):
        if response.HasField("text") and not first:
            first = time.perf_counter() - started_at
        if response.HasField("summary"):
            count = response.summary.usage.completion_tokens
    return Sample(first, count, time.perf_counter() - started_at)


async def _open_loop(target: Target, args: argparse.Namespace, seed: int) -> RunResult:
    """Poisson arrivals at ``--rate`` for ``--seconds`` (seeded: the same in both setups)."""
    draw = random.Random(seed)
    async with grpc.aio.insecure_channel(target.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        start = time.perf_counter()
        tasks: list[asyncio.Task[Sample]] = []
        at = draw.expovariate(args.rate)
        while at < args.seconds:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            prompt = PROMPTS[len(tasks) % len(PROMPTS)]
            tasks.append(asyncio.create_task(_request(stub, target.model, prompt, args.tokens)))
            at += draw.expovariate(args.rate)
        samples = await asyncio.gather(*tasks)
        return RunResult(tuple(samples), time.perf_counter() - start, 0)


async def _saturate(target: Target, args: argparse.Namespace, stop: asyncio.Event) -> None:
    """``--saturation`` streams back to back until ``stop``."""
    async with grpc.aio.insecure_channel(target.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def worker(index: int) -> None:
            while not stop.is_set():
                await _request(stub, target.model, PROMPTS[index % len(PROMPTS)], args.tokens)

        await asyncio.gather(*(worker(i) for i in range(args.saturation)))


async def _run(
    targets: dict[str, Target], scenario: str, args: argparse.Namespace, seed: int
) -> dict[str, RunResult]:
    if scenario == STEADY:
        smollm, gemma = await asyncio.gather(
            _open_loop(targets[SMOLLM], args, seed), _open_loop(targets[GEMMA], args, seed + 1)
        )
        return {SMOLLM: smollm, GEMMA: gemma}
    stop = asyncio.Event()
    load = asyncio.create_task(_saturate(targets[GEMMA], args, stop))
    await asyncio.sleep(2.0)  # the buffer fills before the measured arrivals begin
    smollm = await _open_loop(targets[SMOLLM], args, seed)
    stop.set()
    await load
    return {SMOLLM: smollm}


Results = dict[str, dict[str, dict[str, list[RunResult]]]]  # scenario -> setup -> model -> runs


async def bench(args: argparse.Namespace, log_dir: Path) -> Results:
    results: Results = {}
    async with setups(args, log_dir) as by_setup:
        for scenario in (STEADY, SATURATED):
            results[scenario] = {SHARED: {}, SEPARATE: {}}
            for number in range(args.rounds):
                for setup, targets in by_setup.items():
                    runs = await _run(targets, scenario, args, seed=1000 * number)
                    for model, run in runs.items():
                        results[scenario][setup].setdefault(model, []).append(run)
                        log(
                            f"{scenario} round {number + 1} {setup} {model}: "
                            f"TTFT p50 {run.ttft_ms(0.5):.0f} ms, {run.tokens_per_second:.1f} tok/s"
                        )
    return results


def _spread(runs: list[RunResult]) -> float:
    """How far the per-round TTFT p50s lie apart: max/min - 1."""
    p50s = [run.ttft_ms(0.5) for run in runs]
    return max(p50s) / max(min(p50s), 1e-9) - 1


def _pooled(runs: list[RunResult]) -> RunResult:
    return RunResult(tuple(s for run in runs for s in run.samples), sum(r.wall for r in runs), 0)


def markdown_table(results: Results, tolerance: float) -> str:
    header = [
        "scenario", "model", "TTFT p50 one / each (ms)", "TTFT p99 one / each (ms)",
        "tok/s one / each", "p50 ratio", "tok/s ratio", "noise", "result",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario, by_setup in results.items():
        for model, shared_runs in by_setup[SHARED].items():
            own_runs = by_setup[SEPARATE][model]
            shared, own = _pooled(shared_runs), _pooled(own_runs)
            noise = max(tolerance, _spread(own_runs), _spread(shared_runs))
            ratio = shared.ttft_ms(0.5) / own.ttft_ms(0.5)
            rate = statistics.median(r.tokens_per_second for r in shared_runs) / statistics.median(
                r.tokens_per_second for r in own_runs
            )
            passed = abs(ratio - 1) <= noise and abs(rate - 1) <= noise
            row = [
                scenario, model,
                f"{shared.ttft_ms(0.5):.0f} / {own.ttft_ms(0.5):.0f}",
                f"{shared.ttft_ms(0.99):.0f} / {own.ttft_ms(0.99):.0f}",
                f"{shared.tokens_per_second:.1f} / {own.tokens_per_second:.1f}",
                f"{ratio:.2f}", f"{rate:.2f}", f"±{noise:.2f}", "PASS" if passed else "FAIL",
            ]  # fmt: skip
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="paddler-bench-pools-"))
    results = asyncio.run(bench(args, log_dir))
    print(markdown_table(results, args.tolerance))
    print()
    print(
        f"Four agents ({args.slots} slots, 1 thread each), {args.rate:g} requests/s per model "
        f"for {args.seconds:g} s, {args.tokens} tokens each, {args.rounds} rounds per setup; "
        f"saturated: {args.saturation} Gemma streams. Logs: {log_dir}"
    )


if __name__ == "__main__":
    main()
